"""The table shapes, sizes and cases of the sync matrix (test_matrix.py), and the data they hold.

A case is one legacy MySQL table of one shape and size, driven through every step in order.
Each source table has an unmapped `n` column (0, 1, 2, … per row) that only the harness reads:
it picks the rows a step changes or deletes, in one statement, whatever the table's key.
Changed values are computed by MySQL from `n` and a generation number, so every step changes
every selected row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

SOURCE_ZONE = ZoneInfo("Asia/Shanghai")  # the config's default source_timezone
BATCH_SIZE = 50
T0 = datetime(2024, 5, 1, 10, 0, 0)
# a step's generation g dates the rows it changes from here on (never in the future)
GENERATION_START = datetime(2024, 6, 1)
# multiplier that scatters the rows a step picks over the whole key range
SCATTER = 7919

# values that must round-trip exactly
SPECIAL_TEXTS: list[str | None] = [
    None, "", " ", "\t", "tab\tinside", "line1\nline2", "cr\rcrlf\r\n", "back\\slash", "\\N",
    "NULL", "it's", '"double"', "`backtick`", "emoji 🚀👍🏽", "CJK-B 𠀀𪚥", "  padded  ",
    "\u3000全角空格\u3000", "年金\\t计划", "a\u00a0b", "%s %(x)s {}", "ends with backslash\\",
]


@dataclass(frozen=True)
class Column:
    name: str
    mysql: str  # the column's MySQL type
    pg: str  # the target column's PostgreSQL type
    kind: str  # how values compare: text, int, decimal, datetime, date, bool, json


@dataclass(frozen=True)
class Shape:
    """A legacy table's key and engine, with text-only or typed columns."""

    key_kind: str  # int, varchar, composite, nokey, myisam
    columns_kind: str  # text; typed (digests compare them); json (typed and a JSON column)

    @property
    def name(self) -> str:
        return f"{self.key_kind}-{self.columns_kind}"

    @property
    def keys(self) -> list[Column]:
        return KEY_COLUMNS[self.key_kind]

    @property
    def values(self) -> list[Column]:
        return {"text": TEXT_COLUMNS, "typed": TYPED_COLUMNS,
                "json": [*TYPED_COLUMNS, JSON_COLUMN]}[self.columns_kind]

    @property
    def mapped(self) -> list[Column]:
        return [*self.keys, *self.values]

    @property
    def incremental(self) -> bool:
        """Text tables carry an `incremental` block; the others are read in full."""
        return self.columns_kind == "text"

    @property
    def verify_status(self) -> str:
        """What `verify` says of the table in step: digests have no canonical text for JSON."""
        return "unsupported" if self.columns_kind == "json" else "in_step"

    def mysql_ddl(self, table: str) -> str:
        cols = ", ".join(f"`{c.name}` {c.mysql} NOT NULL" if c in self.keys
                         else f"`{c.name}` {c.mysql}" for c in self.mapped)
        pk = "" if self.key_kind == "nokey" else (
            ", PRIMARY KEY (" + ", ".join(f"`{c.name}`" for c in self.keys) + ")")
        engine = "MyISAM" if self.key_kind == "myisam" else "InnoDB"
        return (f"CREATE TABLE `{table}` (n INT NOT NULL, {cols}, updated_at DATETIME NOT NULL"
                f"{pk}) ENGINE={engine} DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")

    def pg_ddl(self, schema: str, table: str, tracking_ddl: str) -> str:
        cols = ", ".join(f'"{c.name}" {c.pg}' + (" NOT NULL" if c in self.keys else "")
                         for c in self.mapped)
        pk = ", ".join(f'"{c.name}"' for c in self.keys)
        return (f'CREATE SCHEMA IF NOT EXISTS "{schema}"; CREATE TABLE "{schema}"."{table}" '
                f"({cols}, {tracking_ddl}, PRIMARY KEY ({pk}))")

    def key_values(self, n: int) -> tuple[Any, ...]:
        if self.key_kind in ("int", "myisam"):
            return (n * 3 + 1,)  # gaps between keys
        if self.key_kind == "varchar":  # cases and scripts that sort apart in each collation
            return (("K", "k", "计划-", "é", "Z_")[n % 5] + f"{n:07d}",)
        if self.key_kind == "composite":
            return ("Pp"[n // 7 % 2] + f"{n // 7:05d}", n % 7)
        return (f"C{n:07d}",)  # nokey

    def row(self, n: int, updated_at: datetime) -> tuple[Any, ...]:
        """Source row `n` as first loaded: (n, keys…, values…, updated_at)."""
        values = [_first_value(c.name, n) for c in self.values]
        return (n, *self.key_values(n), *values, updated_at)

    def change_sql(self, table: str) -> str:
        """UPDATE of the rows `picked_sql` picks to generation %(g)s (values and updated_at
        %(stamp)s + up to an hour)."""
        sets = ", ".join(f"`{c.name}` = {CHANGED_SQL[c.name]}" for c in self.values)
        return (f"UPDATE `{table}` SET {sets}, updated_at = %(stamp)s + INTERVAL MOD(n, 3600) "
                f"SECOND WHERE {picked_sql()}")


KEY_COLUMNS: dict[str, list[Column]] = {
    "int": [Column("id", "INT", "integer", "int")],
    "myisam": [Column("id", "INT", "integer", "int")],
    "varchar": [Column("code", "VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                       "varchar(40)", "text")],
    "composite": [Column("plan", "VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
                         "varchar(20)", "text"),
                  Column("seq", "INT", "integer", "int")],
    "nokey": [Column("code", "VARCHAR(20)", "varchar(20)", "text")],
}
TEXT_COLUMNS = [Column("name", "VARCHAR(100)", "varchar(100)", "text"),
                Column("note", "TEXT", "text", "text")]
TYPED_COLUMNS = [Column("name", "VARCHAR(100)", "varchar(100)", "text"),
                 Column("amount", "DECIMAL(12,2)", "numeric(12,2)", "decimal"),
                 Column("dt", "DATETIME", "timestamptz", "datetime"),
                 Column("d", "DATE", "date", "date"),
                 Column("flag", "TINYINT(1)", "boolean", "bool")]
JSON_COLUMN = Column("doc", "JSON", "jsonb", "json")
# generation %(g)s of each value column, computed by MySQL from n
CHANGED_SQL = {
    "name": "CONCAT('名称 ', n, ' g', %(g)s)",
    "note": "CONCAT('note\\t', n, ' g', %(g)s, ' 备注')",
    "amount": "(MOD(n * 37 + %(g)s * 13, 200000) - 100000) / 100",
    "dt": "'2020-01-01' + INTERVAL (n * 7 + %(g)s) MINUTE",
    "d": "'1990-01-01' + INTERVAL MOD(n * 3 + %(g)s, 40000) DAY",
    "flag": "MOD(n + %(g)s, 2)",
    "doc": "JSON_OBJECT('n', n, 'g', %(g)s, 'tags', JSON_ARRAY('a', '计划'))",
}


def _first_value(name: str, n: int) -> Any:
    """The first load's value of column `name` in row `n`: NULLs, edge values, long text."""
    if name == "name":
        return SPECIAL_TEXTS[n] if n < len(SPECIAL_TEXTS) else (
            None if n % 13 == 5 else f"企业年金计划 {n}")
    if name == "note":
        return "长文本" * 1000 if n % 97 == 0 else (None if n % 11 == 2 else f"备注 {n}")
    if name == "amount":
        return None if n % 11 == 3 else (
            Decimal("9999999999.99") if n % 101 == 0 else Decimal(n * 37 % 200000 - 100000) / 100)
    if name == "dt":
        return None if n % 17 == 4 else datetime(2020, 1, 1) + timedelta(minutes=n * 7)
    if name == "d":
        return None if n % 19 == 6 else date(1990, 1, 1) + timedelta(days=n * 3 % 40000)
    if name == "flag":
        return None if n % 23 == 7 else n % 2
    assert name == "doc"
    return None if n % 29 == 8 else json.dumps(
        {"n": n, "tags": ["a", "计划", "x\ty"], "nested": {"ok": n % 2 == 0, "none": None},
         "f": 1.5}, ensure_ascii=False)


def normalise(kind: str, value: Any) -> Any:
    """A value as both sides compare it (a naive DATETIME is a wall time in SOURCE_ZONE)."""
    if value is None:
        return None
    if kind == "datetime" and value.tzinfo is None:
        return value.replace(tzinfo=SOURCE_ZONE)
    if kind == "bool":
        return bool(value)
    if kind == "json" and isinstance(value, str | bytes):
        return json.loads(value)
    return value


def picked_sql() -> str:
    """About %(k)s of the table's %(size)s rows (exactly, while n runs 0…size-1 and size is
    prime to SCATTER), scattered over the key range; %(salt)s varies the pick."""
    return f"MOD(n * {SCATTER} + %(salt)s, %(size)s) < %(k)s"


def generation_stamp(g: int) -> datetime:
    return GENERATION_START + timedelta(days=g)


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    shape: Shape
    size: int
    writer: bool = False  # a concurrent writer on the source during one full read

    @property
    def id(self) -> str:
        return f"{self.shape.name}-{self.size}" + ("-writer" if self.writer else "")

    @property
    def table(self) -> str:
        return "m_" + self.id.replace("-", "_")

    @property
    def step_deadline_s(self) -> float:
        """The longest one step (a plan and a sync, and the checks) may take before the case
        counts as hung: several times what it takes on a loaded two-core machine."""
        return 15.0 + self.size / 1500


def shape(name: str) -> Shape:
    key_kind, columns_kind = name.split("-")
    return Shape(key_kind, columns_kind)


ALL_SHAPES = [Shape(k, c) for k in KEY_COLUMNS for c in ("text", "typed")]
JSON_SHAPES = [shape("int-json"), shape("nokey-json"), shape("varchar-json")]

# Thresholds in the code the sizes sit around: batch_size (BATCH_SIZE ± 1; several chunks
# from 51 on), digest buckets of ROWS_PER_BUCKET = 32 rows (1001: ~31 buckets),
# postgres.ANALYZE_FULL_UP_TO = 3000, postgres.SMALL_STAGE = 10_000, digest.ROW_BUCKETS_FROM
# = 100_000 (string keys bucketed by row hash from there on).
# The slice CI runs: every shape, the steps, the no-key 20 %-changed full read, and key ranges.
SLICE = [
    Case(shape("nokey-text"), 3001),
    Case(shape("composite-typed"), 1001),
    Case(shape("int-json"), 51),
    Case(shape("varchar-text"), 1001, writer=True),
    Case(shape("myisam-text"), 1),
    Case(shape("int-text"), 10_001),  # compared in key ranges (digest.RANGES_FROM_ROWS)
]


def full_matrix() -> list[Case]:
    cases = [Case(s, n) for s in ALL_SHAPES for n in (0, 1, 51, 1001)]
    cases += [Case(s, n) for s in JSON_SHAPES for n in (1, 1001)]
    cases += [Case(shape(s), n) for s in ("int-text", "varchar-typed", "composite-text",
                                          "nokey-text", "myisam-typed") for n in (49, 50)]
    cases += [Case(shape(s), 3001) for s in ("int-typed", "varchar-text", "composite-typed",
                                             "nokey-typed")]
    cases += [Case(shape(s), 10_001) for s in ("int-text", "varchar-typed", "composite-text",
                                               "nokey-text", "myisam-typed", "nokey-typed")]
    cases += [Case(shape(s), 100_000) for s in ("varchar-text", "nokey-text")]
    cases += [Case(shape(s), n, writer=True) for s, n in (
        ("int-text", 10_001), ("nokey-text", 10_001), ("composite-typed", 3001),
        ("myisam-text", 1001), ("varchar-typed", 1001))]
    return [c for c in cases if c not in SLICE]


def case_by_id(case_id: str) -> Case:
    [case] = [c for c in [*SLICE, *full_matrix()] if c.id == case_id]
    return case


def params(cases: Sequence[Case], *marks: Any) -> list[Any]:
    return [pytest.param(case, id=case.id, marks=marks) for case in cases]
