"""Where a secret can appear, and that place redacted (DESIGN 4.5).

A password reaches refsync in a database URL's user-info (`scheme://user:secret@host`), in a
`password=` (or `sslpassword=`) query parameter, in a libpq key=value string
(`host=h password=secret`), in a malformed URL (an unencoded `@` in the password) or in a ping
URL. Each function here knows those places and masks what sits there, never every substring
that happens to equal a secret: a short password must not mask innocent text. Imports nothing
heavier than `re` and `urllib.parse`, so the logging set-up can use it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["MASK", "redact_url", "scrub", "url_secrets"]

MASK = "***"
SECRET_KEYS = ("password", "sslpassword")

# `scheme://user:secret@`: the secret runs to the last `@` of the token (an unencoded `@` in
# it leaves nothing of it behind)
_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*):\S*@")
# `?password=secret&…` in a URL: the value ends at the next `&`
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&#\s]*", re.IGNORECASE)
# `password=secret` in a libpq key=value string or a driver's message (not in a URL query)
_KEYWORD_SECRET = re.compile(
    r"(?<![?&\w])((?:ssl)?password|passwd|pwd)(\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|\S+)",
    re.IGNORECASE)


def scrub(text: str) -> str:
    """`text` with the secret of every URL user-info, `password=` query parameter and
    key=value pair in it masked; nothing else changes."""
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    return _KEYWORD_SECRET.sub(rf"\1\2{MASK}", text)


def redact_url(url: str) -> str:
    """A database URL (or libpq key=value string) fit to show: its password masked wherever
    it was written, user, host, port, database and other parameters kept."""
    return scrub(url)


def url_secrets(url: str) -> list[str]:
    """Every password written in `url` (a URL, possibly malformed, or a libpq key=value
    string), as written and percent-decoded: what a log redactor must also look for."""
    found: list[str] = []
    if "://" in url:
        rest = url.split("://", 1)[1]
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        token = rest.split(None, 1)[0] if rest.strip() else ""
        for userinfo in (netloc.rpartition("@")[0], token.rpartition("@")[0]):
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
        try:
            query = urlsplit(url).query
        except ValueError:
            query = url.partition("?")[2]
        found += [v for k, v in parse_qsl(query, keep_blank_values=False)
                  if k.lower() in SECRET_KEYS]
    for match in _KEYWORD_SECRET.finditer(url):
        value = match[3]
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        found.append(value)
    out: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret)):
            if form and form not in out:
                out.append(form)
    return out
