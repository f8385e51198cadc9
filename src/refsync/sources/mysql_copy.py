"""MySQL formats a row as PostgreSQL COPY text, and flags rows whose values would not fit.

Each database does what it does best: MySQL prints its own values (decimals keep their
scale, dates are ISO, TINYINT(1)/BIT(1) print 0/1, which PostgreSQL's boolean input takes),
and PostgreSQL parses the text by the target column's type. A naive DATETIME bound for a
`timestamptz` column is read by PostgreSQL under a session `TimeZone` of the table's
`source_timezone`, which gets every historical rule of the zone right.

The pre-check renders the target column's limits (rules.limits: the very list the Python
converters check) in SQL: the length, integer width, numeric precision and scale, NOT NULL,
the boolean 0/1 rule, zero and invalid dates. It only has to be conservative: a row it flags
is read again as Python values and judged by the converters, which alone decide what is
rejected and why; a row it passes must be one the converters would pass unchanged.

A (source type, target column) pair with no rule here returns None: such a table is read as
Python values and converted by the value rules (slower, same result).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, and_, case, func, literal, literal_column, not_, or_
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.elements import ColumnElement

from refsync.model import ColumnInfo
from refsync.rules import Limit, Rule, limits

_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
NULL_FIELD = "\\N"


def escaped_text(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """A string value as a COPY text field: backslash, tab, LF and CR escaped."""
    for raw, escaped in _COPY_ESCAPES:
        col = func.replace(col, literal(raw), literal(escaped))
    return col


def _is_bit1(t: sqltypes.TypeEngine[Any]) -> bool:
    return isinstance(t, mysql.BIT) and (getattr(t, "length", None) or 1) == 1


def _integer_range(t: sqltypes.TypeEngine[Any]) -> tuple[int, int]:
    """The values a MySQL integer column can hold."""
    widths: dict[type[Any], int] = {mysql.TINYINT: 8, mysql.SMALLINT: 16, mysql.MEDIUMINT: 24,
                                    mysql.BIGINT: 64}
    bits = widths.get(type(t), 32)
    if getattr(t, "unsigned", False):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _exact(n: int | Decimal) -> ColumnElement[Any]:
    """An exact numeric literal (never a float, never a bound parameter)."""
    return literal_column(str(n))


def _date_invalid(col: ColumnElement[Any]) -> ColumnElement[bool]:
    """Zero dates and dates with a zero or impossible part (ALLOW_INVALID_DATES) do not
    survive date arithmetic: MySQL returns NULL for them."""
    return and_(col.is_not(None), (col + literal_column("INTERVAL 0 DAY")).is_(None))


class CopyColumn:
    """One mapped column: how MySQL prints it for COPY, and when the row needs the converters."""

    def __init__(self, field: ColumnElement[Any], checks: list[ColumnElement[bool]]) -> None:
        self.field = field
        self.checks = checks


def copy_column(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any] | None,
                target: ColumnInfo, *, source_nullable: bool = True) -> CopyColumn | None:
    """The COPY field and pre-checks for `col` of MySQL type `source` into `target`, or None
    when the pair has no server-side rendering, or the target has a limit the server cannot
    check (the converters then judge every row). The checks are the target's limits
    (rules.limits), each rendered in SQL, less those the source's declared type already
    guarantees (a NOT NULL column, a VARCHAR no longer than the target's, a DECIMAL with no
    more digits): the server evaluates the rest on every row.

    Numbers and dates go into the line as they are: CONCAT_WS (see `copy_line`) prints
    them exactly as ``CAST(col AS CHAR)`` would, at a fraction of the cost, and their text
    never holds a character COPY must escape."""
    field = None if source is None else _field(col, source, target.kind)
    if field is None or source is None:
        return None
    given = _Given(col, source, source_nullable)
    checks = []
    for limit in limits(target):
        render = PRECHECKS.get(limit.name)
        if render is None:
            return None
        check = render(given, limit)
        if check is not None:
            checks.append(check)
    return CopyColumn(func.ifnull(field, literal(NULL_FIELD)), checks)


def _field(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
           kind: str) -> ColumnElement[Any] | None:
    """How MySQL prints a value of `source` for a `kind` target column; None: it cannot."""
    if isinstance(source, sqltypes.String) and not isinstance(source, sqltypes.JSON):
        return escaped_text(col) if kind in ("text", "json") else None
    if _is_bit1(source):  # 0/1, which PostgreSQL's boolean input takes
        return col + 0 if kind == "boolean" else None
    if isinstance(source, sqltypes.Integer):  # TINYINT(1) too
        return col if kind in ("integer", "numeric", "boolean") else None
    if isinstance(source, sqltypes.Numeric) and not isinstance(source, sqltypes.Float):
        return col if kind == "numeric" else None
    if isinstance(source, mysql.TIMESTAMP):
        # read in a UTC session: say so, whatever the COPY session's TimeZone
        return func.concat(col, literal("+00")) if kind == "timestamptz" else None
    if isinstance(source, sqltypes.DateTime):
        return col if kind in ("timestamp", "timestamptz") else None
    if isinstance(source, sqltypes.Date):
        return col if kind in ("date", "timestamp", "timestamptz") else None
    return None


# ---------------------------------------------------------------- each limit, in SQL


class _Given:
    """The source column a limit is rendered for."""

    def __init__(self, col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
                 nullable: bool) -> None:
        self.col, self.source, self.nullable = col, source, nullable


Check = ColumnElement[bool] | None  # None: the source's type guarantees the limit


def _not_null(g: _Given, limit: Limit) -> Check:
    return g.col.is_(None) if g.nullable else None


def _max_chars(g: _Given, limit: Limit) -> Check:
    # CHAR/VARCHAR(n) and ENUM hold at most n characters (the target's unit); a SET's
    # value joins several members, TEXT's limit is in bytes
    length, limit_chars = getattr(g.source, "length", None), int(limit.arg)
    if (not isinstance(g.source, sqltypes.Text | mysql.SET) and length is not None
            and length <= limit_chars):
        return None
    return func.char_length(g.col) > limit_chars


def _guaranteed(g: _Given, limit: Limit) -> Check:
    """NUL: the reader reads a line holding one again as values (mysql_read); UTF-8: the
    utf8mb4 connection gives nothing else; finite: MySQL's integers and DECIMALs are."""
    return None


def _json_valid(g: _Given, limit: Limit) -> Check:
    return func.json_valid(g.col) == 0


def _json_no_nul(g: _Given, limit: Limit) -> Check:
    return func.locate(literal("\\u0000"), g.col) > 0


def _int_range(g: _Given, limit: Limit) -> Check:
    lo, hi = _integer_range(g.source)
    t_lo, t_hi = limit.arg
    above = g.col > _exact(t_hi) if hi > t_hi else None
    below = g.col < _exact(t_lo) if lo < t_lo else None
    if above is not None and below is not None:
        return or_(above, below)
    return above if above is not None else below


def _scale(g: _Given, limit: Limit) -> Check:
    """More places than the target keeps, unless trailing zeros."""
    scale = getattr(g.source, "scale", None) or 0
    if isinstance(g.source, sqltypes.Integer) or scale <= limit.arg:
        return None
    return g.col != func.round(g.col, limit.arg)


def _whole_digits(g: _Given, limit: Limit) -> Check:
    """DECIMAL(p, s) holds less than 10^(p-s), an integer type its range."""
    if isinstance(g.source, sqltypes.Integer):
        lo, hi = _integer_range(g.source)
        fits = max(hi, -lo) < limit.arg
    else:
        precision, scale = getattr(g.source, "precision", None), getattr(g.source, "scale", 0)
        fits = precision is not None and 10 ** (precision - (scale or 0)) <= limit.arg
    return None if fits else func.abs(g.col) >= _exact(limit.arg)


def _one_of(g: _Given, limit: Limit) -> Check:
    return None if _is_bit1(g.source) else not_(g.col.in_(limit.arg))


def _real_date(g: _Given, limit: Limit) -> Check:
    return _date_invalid(g.col)


# One rendering per rule (rules.py); a limit missing here takes its column off the
# fast path.
PRECHECKS: dict[Rule, Callable[[_Given, Limit], Check]] = {
    Rule.NOT_NULL: _not_null, Rule.MAX_CHARS: _max_chars, Rule.STORABLE_TEXT: _guaranteed,
    Rule.JSON_VALID: _json_valid, Rule.JSON_NO_NUL: _json_no_nul,
    Rule.INT_RANGE: _int_range, Rule.FINITE: _guaranteed, Rule.SCALE: _scale,
    Rule.WHOLE_DIGITS: _whole_digits, Rule.ONE_OF: _one_of, Rule.REAL_DATE: _real_date,
}


def copy_line(columns: list[CopyColumn]) -> ColumnElement[Any]:
    """One COPY text line from the columns' fields (each already non-NULL)."""
    return func.concat_ws(literal("\t"), *(c.field for c in columns))


def needs_check(columns: list[CopyColumn]) -> ColumnElement[Any]:
    """1 for a row the converters must judge, else 0."""
    checks = [c for col in columns for c in col.checks]
    if not checks:
        return literal(0, Integer)
    return case((or_(*checks), 1), else_=0)
