"""The server-side pre-check holds only the checks a source column's declared type can fail:
every row pays for each check, so a provably redundant one is left out (no database needed)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import column
from sqlalchemy.dialects import mysql

from refsync.model import ColumnInfo
from refsync.sources.mysql_copy import copy_column, needs_check


def _checks(source: Any, target: ColumnInfo, *, nullable: bool = True) -> str:
    rule = copy_column(column("c"), source, target, source_nullable=nullable)
    assert rule is not None
    return str(needs_check([rule]).compile(dialect=mysql.dialect(),
                                           compile_kwargs={"literal_binds": True}))


TEXT20 = ColumnInfo("c", "text", nullable=False, max_length=20)


@pytest.mark.parametrize(("source", "checked"), [
    (mysql.VARCHAR(20), False),  # holds at most 20 characters: cannot overflow
    (mysql.VARCHAR(10), False),
    (mysql.CHAR(20), False),
    (mysql.ENUM("a", "bb"), False),
    (mysql.VARCHAR(21), True),
    (mysql.TEXT(), True),  # TEXT's limit is in bytes, not characters
    (mysql.SET("abcdefghij", "klmnopqrst", "u"), True),  # members join: 'abc…,klm…,u'
])
def test_length_is_checked_only_where_the_source_can_be_longer(source: Any,
                                                               checked: bool) -> None:
    sql = _checks(source, TEXT20, nullable=False)
    assert ("char_length" in sql) is checked, sql


def test_not_null_is_checked_only_for_a_nullable_source_column() -> None:
    assert "IS NULL" not in _checks(mysql.VARCHAR(20), TEXT20, nullable=False)
    assert "c IS NULL" in _checks(mysql.VARCHAR(20), TEXT20, nullable=True)
    # a nullable target never checks it
    assert _checks(mysql.VARCHAR(20), ColumnInfo("c", "text", max_length=20)) == "0"


@pytest.mark.parametrize(("source", "target", "checked"), [
    (mysql.DECIMAL(18, 4), (18, 4), False),  # < 10^14 on both sides
    (mysql.DECIMAL(16, 2), (18, 4), False),
    (mysql.DECIMAL(19, 4), (18, 4), True),
    (mysql.DECIMAL(18, 2), (18, 4), True),  # 16 digits before the point, the target 14
    (mysql.DECIMAL(), (18, 4), True),  # precision unknown: checked
])
def test_numeric_range_is_checked_only_where_the_source_has_more_digits(
        source: Any, target: tuple[int, int], checked: bool) -> None:
    info = ColumnInfo("c", "numeric", precision=target[0], scale=target[1])
    sql = _checks(source, info)
    assert ("abs(c) >=" in sql) is checked, sql


def test_rules_the_type_cannot_rule_out_stay() -> None:
    """Zero dates and TINYINT(1) values other than 0/1 fit their declared types."""
    assert "INTERVAL 0 DAY" in _checks(mysql.DATE(), ColumnInfo("c", "date"))
    assert "NOT IN (0, 1)" in _checks(mysql.TINYINT(display_width=1), ColumnInfo("c", "boolean"))
    # more places than the target keeps
    assert "round(c, 2)" in _checks(mysql.DECIMAL(18, 4), ColumnInfo("c", "numeric",
                                                                     precision=18, scale=2))


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_integer_bounds_are_the_converters_bounds(bits: int) -> None:
    """The pre-check flags a value just past the bounds the converters enforce (one home:
    rules.integer_bounds)."""
    from zoneinfo import ZoneInfo

    from refsync.rules import RejectValue, integer_bounds
    from refsync.transform import make_converter

    target = ColumnInfo("c", "integer", nullable=True, int_bits=bits)
    lo, hi = integer_bounds(target)
    convert = make_converter(target, ZoneInfo("UTC"))
    assert convert(hi) == hi and convert(lo) == lo
    for outside in (hi + 1, lo - 1):
        with pytest.raises(RejectValue):
            convert(outside)
    assert f"c > {hi}" in _checks(mysql.BIGINT(unsigned=True), target)
    if bits < 64:
        assert f"c < {lo}" in _checks(mysql.BIGINT(), target)


def test_numeric_limit_is_the_converters_limit() -> None:
    from zoneinfo import ZoneInfo

    from refsync.rules import RejectValue, numeric_limit
    from refsync.transform import make_converter

    target = ColumnInfo("c", "numeric", nullable=True, precision=5, scale=2)
    assert numeric_limit(target) == 1000
    convert = make_converter(target, ZoneInfo("UTC"))
    assert str(convert("999.99")) == "999.99"
    with pytest.raises(RejectValue):
        convert("1000")
    assert "abs(c) >= 1000" in _checks(mysql.INTEGER(), target)


def test_a_tinyint1_is_checked_against_a_narrow_numeric() -> None:
    """TINYINT(1) holds -128..127, not only 0/1: numeric(2,0) takes less than 100."""
    assert "abs(c) >= 100" in _checks(mysql.TINYINT(display_width=1),
                                      ColumnInfo("c", "numeric", precision=2, scale=0))
    assert _checks(mysql.TINYINT(display_width=1),
                   ColumnInfo("c", "numeric", precision=3, scale=0)) == "0"


def test_every_limit_of_a_fast_path_kind_has_a_rendering() -> None:
    """Each limit the converters check for these kinds is rendered (or known to be
    guaranteed) by the pre-check."""
    from refsync import rules
    from refsync.sources.mysql_copy import PRECHECKS

    for kind in ("text", "json", "integer", "numeric", "boolean", "date", "timestamp",
                 "timestamptz"):
        target = ColumnInfo("c", kind, nullable=False, max_length=5, precision=4, scale=2,
                            int_bits=16)
        names = {limit.name for limit in rules.limits(target)}
        assert names <= PRECHECKS.keys(), (kind, names - PRECHECKS.keys())


def test_a_limit_the_server_cannot_check_takes_the_column_off_the_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new rule in the table that the pre-check does not know never lets a row through
    unchecked: the column goes the values path, where the converters apply it."""
    from refsync import rules

    text = rules.KINDS["text"]
    assert copy_column(column("c"), mysql.VARCHAR(20), TEXT20) is not None
    monkeypatch.setitem(rules.KINDS, "text", rules.Kind(
        text.exact, text.coercion, lambda col: [*text.limits(col), rules.Limit("new_rule")]))
    assert copy_column(column("c"), mysql.VARCHAR(20), TEXT20) is None


def test_the_converter_checks_every_limit_of_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The converters are built from the same table: a limit added there is checked."""
    from zoneinfo import ZoneInfo

    from refsync import rules

    def no_x(s: str) -> str:
        if "x" in s:
            raise rules.RejectValue("holds an x")
        return s

    text = rules.KINDS["text"]
    monkeypatch.setitem(rules.KINDS, "text", rules.Kind(
        text.exact, text.coercion, lambda col: [*text.limits(col), rules.Limit("no_x", None,
                                                                                 no_x)]))
    convert = rules.make_converter(TEXT20, ZoneInfo("UTC"))
    assert convert("abc") == "abc"
    with pytest.raises(rules.RejectValue, match="holds an x"):
        convert("xyz")
    with pytest.raises(rules.RejectValue, match="holds an x"):
        convert(b"xyz")  # coerced first, then checked
