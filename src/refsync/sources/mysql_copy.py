"""MySQL formats a row as PostgreSQL COPY text, and flags rows whose values would not fit.

Each database does what it does best: MySQL prints its own values (decimals keep their
scale, dates are ISO, TINYINT(1)/BIT(1) print 0/1, which PostgreSQL's boolean input takes),
and PostgreSQL parses the text by the target column's type. A naive DATETIME bound for a
`timestamptz` column is read by PostgreSQL under a session `TimeZone` of the table's
`source_timezone`, which gets every historical rule of the zone right.

The pre-check is built from the same limits the Python converters enforce (rules.py:
the target column's length, integer width, numeric precision and scale, NOT NULL, the
boolean 0/1 rule, zero and invalid dates). It only has to be conservative: a row it flags is
read again as Python values and judged by the converters, which alone decide what is
rejected and why; a row it passes must be one the converters would pass unchanged.

A (source type, target column) pair with no rule here returns None: such a table is read as
Python values and converted by the value rules (slower, same result).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, and_, case, func, literal, literal_column, not_, or_
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.elements import ColumnElement

from refsync.model import ColumnInfo
from refsync.rules import BOOLEAN_INTS, integer_bounds, numeric_limit

_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
NULL_FIELD = "\\N"


def escaped_text(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """A string value as a COPY text field: backslash, tab, LF and CR escaped."""
    for raw, escaped in _COPY_ESCAPES:
        col = func.replace(col, literal(raw), literal(escaped))
    return col


def _is_bool_int(t: sqltypes.TypeEngine[Any]) -> bool:
    return isinstance(t, mysql.TINYINT) and getattr(t, "display_width", None) == 1


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


Rule = tuple[ColumnElement[Any], list[ColumnElement[bool]]]  # (COPY field, pre-checks)


def copy_column(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any] | None,
                target: ColumnInfo, *, source_nullable: bool = True) -> CopyColumn | None:
    """The COPY field and pre-checks for `col` of MySQL type `source` into `target`, or None
    when there is no server-side rule for the pair. A check the source's declared type
    cannot fail (a NOT NULL column, a VARCHAR no longer than the target's, a DECIMAL with no
    more digits) is left out: the server evaluates the rest on every row.

    Numbers and dates go into the line as they are: CONCAT_WS (see `copy_line`) prints
    them exactly as ``CAST(col AS CHAR)`` would, at a fraction of the cost, and their text
    never holds a character COPY must escape."""
    rule = None if source is None else _rule_for(col, source, target)
    if rule is None:
        return None
    field, checks = rule
    if not target.nullable and source_nullable:  # (a key column is never nullable)
        checks.insert(0, col.is_(None))
    return CopyColumn(func.ifnull(field, literal(NULL_FIELD)), checks)


def _rule_for(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
              target: ColumnInfo) -> Rule | None:
    if isinstance(source, sqltypes.String) and not isinstance(source, sqltypes.JSON):
        return _string_rule(col, source, target)
    if _is_bool_int(source) or _is_bit1(source):
        return _flag_rule(col, source, target)
    if isinstance(source, sqltypes.Integer):
        return _integer_rule(col, source, target)
    if isinstance(source, sqltypes.Numeric) and not isinstance(source, sqltypes.Float):
        return _decimal_rule(col, source, target)
    if isinstance(source, mysql.TIMESTAMP):
        if target.kind != "timestamptz":
            return None
        # read in a UTC session: say so, whatever the COPY session's TimeZone
        return func.concat(col, literal("+00")), [_date_invalid(col)]
    if isinstance(source, sqltypes.DateTime):
        return (col, [_date_invalid(col)]) if target.kind in ("timestamp", "timestamptz") \
            else None
    if isinstance(source, sqltypes.Date):
        return (col, [_date_invalid(col)]) if target.kind in ("date", "timestamp",
                                                              "timestamptz") else None
    return None


def _string_rule(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
                 target: ColumnInfo) -> Rule | None:
    kind = target.kind
    if kind not in ("text", "json"):
        return None
    checks: list[ColumnElement[bool]] = []
    # CHAR/VARCHAR(n) and ENUM hold at most n characters (the target's unit); a SET's
    # value joins several members, TEXT's limit is in bytes
    length = getattr(source, "length", None)
    bounded = (not isinstance(source, sqltypes.Text | mysql.SET) and length is not None
               and length <= target.max_length) if target.max_length else True
    if kind == "text" and not bounded:
        checks.append(func.char_length(col) > target.max_length)
    if kind == "json":
        checks.append(func.json_valid(col) == 0)
        checks.append(func.locate(literal("\\u0000"), col) > 0)
    return escaped_text(col), checks


def _flag_rule(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
               target: ColumnInfo) -> Rule | None:
    """TINYINT(1) and BIT(1): 0/1, which PostgreSQL's boolean input takes."""
    if target.kind == "boolean":
        if _is_bit1(source):
            return col + 0, []
        return col, [not_(col.in_(BOOLEAN_INTS))]
    if target.kind in ("integer", "numeric") and not _is_bit1(source):
        return col, []
    return None


def _integer_rule(col: ColumnElement[Any], source: sqltypes.TypeEngine[Any],
                  target: ColumnInfo) -> Rule | None:
    lo, hi = _integer_range(source)
    checks: list[ColumnElement[bool]] = []
    if target.kind == "integer":
        t_lo, t_hi = integer_bounds(target)
        if hi > t_hi:
            checks.append(col > _exact(t_hi))
        if lo < t_lo:
            checks.append(col < _exact(t_lo))
    elif target.kind == "numeric":
        limit = numeric_limit(target)
        if limit is not None and max(hi, -lo) >= limit:
            checks.append(func.abs(col) >= _exact(limit))
    elif target.kind == "boolean":
        checks.append(not_(col.in_(BOOLEAN_INTS)))
    else:
        return None
    return col, checks


def _decimal_rule(col: ColumnElement[Any], source: sqltypes.Numeric[Any],
                  target: ColumnInfo) -> Rule | None:
    if target.kind != "numeric":
        return None
    checks: list[ColumnElement[bool]] = []
    scale = source.scale or 0
    if target.precision is not None or target.scale is not None:
        t_scale = target.scale or 0
        if scale > t_scale:  # more places than the target keeps, unless trailing zeros
            checks.append(col != func.round(col, t_scale))
        limit = numeric_limit(target)
        # DECIMAL(p, s) holds less than 10^(p-s): no check where that fits the target
        whole = None if source.precision is None else source.precision - scale
        if limit is not None and (whole is None or 10 ** whole > limit):
            checks.append(func.abs(col) >= _exact(limit))
    return col, checks


def copy_line(columns: list[CopyColumn]) -> ColumnElement[Any]:
    """One COPY text line from the columns' fields (each already non-NULL)."""
    return func.concat_ws(literal("\t"), *(c.field for c in columns))


def needs_check(columns: list[CopyColumn]) -> ColumnElement[Any]:
    """1 for a row the converters must judge, else 0."""
    checks = [c for col in columns for c in col.checks]
    if not checks:
        return literal(0, Integer)
    return case((or_(*checks), 1), else_=0)
