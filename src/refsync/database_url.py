"""WDH_DATABASE_URL: the target's URL checked before any I/O, as refsync connects with it.

A malformed URL is a config error (exit 2) whose message never repeats the password and
says how to percent-encode one.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from refsync.errors import ConfigError

__all__ = ["target_url"]

_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_FORM = ("WDH_DATABASE_URL is postgresql://user:password@host:port/database or "
             "sqlite:///path.db")
_ENCODE_HINT = (f"{_URL_FORM}; percent-encode special characters in the user and password: "
                "@ as %40, : as %3A, / as %2F, # as %23, ? as %3F, % as %25 "
                "(p@ss:w/rd is written p%40ss%3Aw%2Frd)")


def _bad_url(problem: str) -> ConfigError:
    return ConfigError(f"WDH_DATABASE_URL {problem}", hint=_ENCODE_HINT)


def target_url(raw: str) -> str:
    """WDH_DATABASE_URL checked, as the URL every part of refsync connects with.

    A libpq key=value string (`host=h user=u password=p dbname=d`) becomes the URL it means.
    A URL that would be misread (an unencoded `@` or `#` in the password, a bad
    percent-escape, a port that is not a number, a driver refsync does not use) is a config
    error naming the variable and how to encode; no message repeats the password."""
    text = raw.strip()
    found = _SCHEME.match(text)
    if found is None:
        if "=" in text:
            return target_url(_url_from_keywords(text))
        raise _bad_url("is not a URL")
    scheme = found["scheme"].lower()
    if scheme not in (*_PG_SCHEMES, *_SQLITE_SCHEMES):
        base = scheme.split("+", 1)[0]
        if base in ("postgresql", "postgres", "sqlite"):
            raise _bad_url(f"names the driver {scheme.split('+', 1)[1]!r}, which refsync does "
                           "not use: write postgresql:// (psycopg) or sqlite:///path.db")
        raise _bad_url(f"names an unsupported database {base!r}: refsync writes to "
                       "PostgreSQL (postgresql://) or SQLite (sqlite:///path.db)")
    if not text[found.end():].startswith("//"):
        raise _bad_url(f"is not a URL: {found['scheme']}: must be followed by //")
    if scheme in _SQLITE_SCHEMES:
        return text
    _check_postgres_url(text)
    return text


def _check_postgres_url(url: str) -> None:
    rest = url.split("://", 1)[1]
    netloc = re.split(r"[/?]", rest, maxsplit=1)[0]
    if "#" in url:
        raise _bad_url("holds a '#' (a password with '#' must write it as %23)")
    if netloc.count("@") > 1:
        raise _bad_url("holds more than one '@' before the host: an '@' in the user or "
                       "password must be written %40")
    if _BAD_PERCENT.search(url):
        raise _bad_url("holds a '%' that does not start a percent-escape (%XX): a '%' in "
                       "the password must be written %25")
    hosts = netloc.rpartition("@")[2]
    ports = [h.rpartition(":")[2] for h in hosts.split(",") if ":" in h.rpartition("]")[2]]
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        raise _bad_url("is not a valid URL (check the host)") from None
    ports += [p for k, v in parse_qsl(query) if k == "port" for p in v.split(",")]
    bad = [p for p in ports if not (p.isascii() and p.isdigit() and 0 < int(p) < 65536)]
    if bad:
        raise _bad_url(f"has a port that is not a number from 1 to 65535 ({bad[0][:20]!r})")
    import psycopg  # libpq's own reading of the URL: unknown parameters, bad syntax

    try:
        psycopg.conninfo.conninfo_to_dict("postgresql://" + rest)
    except psycopg.Error as exc:
        raise _bad_url(f"is not a valid PostgreSQL URL ({_libpq_problem(exc)})") from None


def _libpq_problem(exc: BaseException, *, names_kept: bool = True) -> str:
    """libpq's complaint without what it quotes (a token, or the whole URL, may hold the
    password), except a URL query parameter's name or a separator."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

    def keep_names(m: re.Match[str]) -> str:
        kept = r"[a-z_]{1,40}|\W" if names_kept else r"\W"
        return m[0] if re.fullmatch(kept, m[1]) else '"…"'

    return re.sub(r'"([^"]*)"', keep_names, text)


def _url_from_keywords(text: str) -> str:
    """The postgresql:// URL a libpq key=value string means, each value percent-encoded."""
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.Error as exc:
        raise _bad_url(f"is neither a URL nor a valid libpq key=value string "
                       f"({_libpq_problem(exc, names_kept=False)})") from None
    values = {k: str(v) for k, v in params.items() if v is not None}
    user, password = values.pop("user", None), values.pop("password", None)
    host, port = values.pop("host", None), values.pop("port", None)
    netloc = quote(user or "", safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += "@" if netloc else ""
    if host and not host.startswith("/") and "," not in host:
        netloc += f"[{host}]" if ":" in host else host
        if port and "," not in port:
            netloc += f":{port}"
            port = None
    elif host:
        values["host"] = host
    if port:
        values["port"] = port
    database = quote(values.pop("dbname", ""), safe="")
    query = urlencode(values, quote_via=quote)
    return f"postgresql://{netloc}/{database}" + (f"?{query}" if query else "")
