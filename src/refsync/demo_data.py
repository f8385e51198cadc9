"""Deterministic, realistic reference data for the demo, the tests and the benchmarks.

Pure data and file building: nothing here calls the refsync engine. The words, the demo's
config and its legacy DDL are data files in `refsync/demo_files/`. The same name
generators feed the SQLite "legacy" database of `refsync demo` (`build_legacy_sqlite`) and
the MySQL benchmark dataset (`bench/gen_mysql.py`), so both look like the seed's legacy
tables: `annuity_plan`, `portfolio_plan`, `organization`.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from refsync.tracking import AUTHORITATIVE

LegacyRow = tuple[str | None, ...]
"""One legacy row in the table's column order (all values are text or NULL)."""

# ---------------------------------------------------------------- vocabularies


def demo_file(name: str) -> str:
    """The text of one of the demo's data files (`refsync/demo_files/`, shipped in the wheel)."""
    return (resources.files("refsync") / "demo_files" / name).read_text(encoding="utf-8")


_WORDS: dict[str, Any] = yaml.load(demo_file("vocabulary.yml"),  # noqa: S506
                                   Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
# (short name as used in company names, full administrative name)
REGIONS: tuple[tuple[str, str], ...] = tuple((short, full) for short, full in _WORDS["regions"])
REGION_CITIES: dict[str, tuple[str, ...]] = {
    region: tuple(cities) for region, cities in _WORDS["region_cities"].items()}
BRANDS: tuple[str, ...] = tuple(_WORDS["brands"])
INDUSTRIES: tuple[str, ...] = tuple(_WORDS["industries"])
COMPANY_SUFFIXES: tuple[str, ...] = tuple(_WORDS["company_suffixes"])
PLAN_TYPES: tuple[str, ...] = tuple(_WORDS["plan_types"])
_PLAN_TYPE_WEIGHTS: tuple[int, ...] = tuple(_WORDS["plan_types"].values())
TRUSTEES: tuple[str, ...] = tuple(_WORDS["trustees"])
COLLECTIVE_SERIES: tuple[str, ...] = tuple(_WORDS["collective_series"])
PORTFOLIO_TYPES: tuple[str, ...] = tuple(_WORDS["portfolio_types"])
_PORTFOLIO_TYPE_WEIGHTS: tuple[int, ...] = tuple(_WORDS["portfolio_types"].values())
PORTFOLIO_STYLES: tuple[str, ...] = tuple(_WORDS["portfolio_styles"])
HEAD_OFFICE_UNITS: tuple[str, ...] = tuple(_WORDS["head_office_units"])
PRODUCT_LINES: tuple[tuple[str, str], ...] = tuple(_WORDS["product_lines"].items())
"""产品线代码 → 产品线名称: the seed's PL001–PL003 and a few more."""

# ---------------------------------------------------------------- column types

DEMO_TARGET_TYPES: dict[str, dict[str, str]] = {
    "年金计划": {
        "年金计划号": "varchar(20)",
        "计划名称": "varchar(255)",
        "计划类型": "varchar(50)",
        "客户名称": "varchar(255)",
    },
    "组合计划": {
        "组合代码": "varchar(20)",
        "年金计划号": "varchar(20)",
        "组合名称": "varchar(255)",
        "组合类型": "varchar(50)",
    },
    "组织架构": {
        "组织代码": "varchar(20)",
        "组织名称": "varchar(255)",
    },
    "产品线": {
        "产品线代码": "varchar(20)",
        "产品线名称": "varchar(100)",
    },
}
"""Recommended target column types (table → column → SQL type), for the demo and production.

Primary-key columns (年金计划号, 组合代码, 组织代码, 产品线代码) are also NOT NULL; the
legacy MySQL columns have the same lengths, so every legacy value fits its target."""

DEMO_PRIMARY_KEYS: dict[str, str] = {
    "年金计划": "年金计划号",
    "组合计划": "组合代码",
    "组织架构": "组织代码",
    "产品线": "产品线代码",
}

TRACKING_COLUMN_DDL: dict[str, str] = {
    "_source": f"varchar(20) NOT NULL DEFAULT '{AUTHORITATIVE}'",
    "_needs_review": "boolean NOT NULL DEFAULT false",
    "_derived_from_domain": "varchar(50)",
    "_derived_at": "timestamptz",
}
"""The four tracking columns of Story 6.2.2, as PostgreSQL column definitions."""

# ---------------------------------------------------------------- dirty values


def _cut(rng: random.Random, s: str) -> int:
    return rng.randint(1, max(1, len(s) - 1))


def _insert(ch: str) -> Callable[[random.Random, str], str]:
    def put(rng: random.Random, s: str) -> str:
        k = _cut(rng, s)
        return s[:k] + ch + s[k:]

    return put


DIRTY_KINDS: dict[str, Callable[[random.Random, str], str]] = {
    "tab": _insert("\t"),
    "lf": _insert("\n"),
    "cr": _insert("\r"),
    "crlf": _insert("\r\n"),
    "backslash": _insert("\\"),
    "single_quote": lambda rng, s: f"{s}'s",
    "double_quote": lambda rng, s: f'"{s}"',
    "emoji": lambda rng, s: s + rng.choice(("🚀", "🌱", "📈", "🏦", "👍")),
    "literal_null": lambda rng, s: "NULL",
    "backslash_n": lambda rng, s: "\\N",
    "empty": lambda rng, s: "",
    "blanks": lambda rng, s: rng.choice(("   ", f"  {s} ", f"{s}\u3000", " ")),
}
"""Ways a legacy text value is dirty; every result is no longer than its input + 3 chars."""


@dataclass(frozen=True)
class Dirt:
    """How dirty generated data is."""

    null_customer_rate: float = 0.01
    null_updated_at_rate: float = 0.0
    dirty_rate: float = 0.002
    """Share of name values (plan, customer, portfolio, org) replaced by a dirty variant."""
    kinds: tuple[str, ...] = (
        "tab", "lf", "crlf", "backslash", "single_quote", "double_quote", "emoji",
    )


DEMO_DIRT = Dirt()
"""The demo: ~1% NULL customer_name, a few names with tabs, newlines, quotes, emoji."""

BENCH_DIRT = Dirt(
    null_customer_rate=0.02,
    null_updated_at_rate=0.0001,
    dirty_rate=0.001,
    kinds=tuple(DIRTY_KINDS),
)
"""The benchmark dataset (PEERS.md "Dataset"): 2% NULL customer, 0.01% NULL updated_at,
0.1% values with tab/LF/CR/backslash/quotes/emoji/'NULL'/'\\N'/''/blanks."""


def _dirty(rng: random.Random, dirt: Dirt, value: str) -> str:
    if dirt.dirty_rate and rng.random() < dirt.dirty_rate:
        return DIRTY_KINDS[rng.choice(dirt.kinds)](rng, value)
    return value


# ---------------------------------------------------------------- names


def _pick(rng: random.Random, seq: tuple[str, ...]) -> str:
    """Like rng.choice but one C call per draw; the generators draw millions of values."""
    return seq[int(rng.random() * len(seq))]


def _pool(values: tuple[str, ...], weights: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(v for v, w in zip(values, weights, strict=True) for _ in range(w))


@cache
def company_names() -> tuple[str, ...]:
    """Every region × brand × industry × suffix combination (~130,000 names), built once."""
    return tuple(
        region + brand + industry + suffix
        for region, _full in REGIONS
        for brand in BRANDS
        for industry in INDUSTRIES
        for suffix in COMPANY_SUFFIXES
    )

_PLAN_TYPE_POOL = _pool(PLAN_TYPES, _PLAN_TYPE_WEIGHTS)
_PORTFOLIO_TYPE_POOL = _pool(PORTFOLIO_TYPES, _PORTFOLIO_TYPE_WEIGHTS)


def company_name(rng: random.Random) -> str:
    """e.g. 甘肃中电电力集团股份有限公司"""
    return _pick(rng, company_names())


def plan_type(rng: random.Random) -> str:
    return _pick(rng, _PLAN_TYPE_POOL)


def plan_name(rng: random.Random, kind: str, company: str) -> str:
    """A plan's name for its type: <company>企业年金计划, a trustee's 集合计划, a 职业年金计划."""
    if kind == "集合计划":
        series = rng.choice(COLLECTIVE_SERIES)
        return f"{rng.choice(TRUSTEES)}{series}{rng.randint(1, 30)}号集合计划"
    if kind == "职业年金计划":
        region = rng.choice(REGIONS)[1]
        return rng.choice((
            f"{region}机关事业单位职业年金计划",
            f"{region}职业年金计划",
            f"{region}职业年金计划（{rng.randint(1, 12)}号）",
        ))
    return f"{company}企业年金计划"


def plan_customer(rng: random.Random, kind: str, company: str) -> str:
    """The client: the company itself, or for 职业年金 a social insurance agency."""
    if kind == "职业年金计划":
        return f"{rng.choice(REGIONS)[1]}社会保险事业管理局"
    return company


def portfolio_type(rng: random.Random) -> str:
    return _pick(rng, _PORTFOLIO_TYPE_POOL)


def portfolio_name(rng: random.Random, kind: str) -> str:
    """e.g. 华能电力稳健固定收益组合, 中建交通进取含权益3号组合"""
    n = int(rng.random() * 9) + 1
    number = f"{n}号" if n > 6 else ""
    style = _pick(rng, PORTFOLIO_STYLES)
    return f"{_pick(rng, BRANDS)}{_pick(rng, INDUSTRIES)}{style}{kind[:-1]}{number}组合"


def org_name(rng: random.Random) -> str:
    """分公司, 中心支公司, 营业部 or a head-office unit."""
    pick = rng.random()
    short, _full = rng.choice(REGIONS)
    cities = REGION_CITIES.get(short)
    if pick < 0.35 or cities is None:
        return rng.choice((f"{short}分公司", f"{short}分公司{rng.choice(HEAD_OFFICE_UNITS)}"))
    city = rng.choice(cities)
    if pick < 0.6:
        return f"{short}{city}中心支公司"
    if pick < 0.9:
        return rng.choice((
            f"{city}营业部", f"{short}分公司{city}营业部", f"{city}第{rng.randint(1, 5)}营业部",
        ))
    return f"总公司{rng.choice(HEAD_OFFICE_UNITS)}"


def product_line_rows() -> list[dict[str, str]]:
    return [{"产品线代码": code, "产品线名称": name} for code, name in PRODUCT_LINES]


# ---------------------------------------------------------------- legacy rows

_EPOCH_2015 = 1420070400  # 2015-01-01 00:00:00 (wall clock, no zone)
_EPOCH_2026 = 1767225600  # 2026-01-01 00:00:00
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def code_width(count: int, minimum: int) -> int:
    """Digits after the prefix: at least `minimum`, more when `count` needs them."""
    return max(minimum, len(str(count)))


def plan_code(n: int, width: int) -> str:
    return f"P{n:0{width}d}"


def portfolio_code(n: int, width: int) -> str:
    return f"PF{n:0{width}d}"


def org_code(n: int, width: int) -> str:
    return f"ORG{n:0{width}d}"


def _timestamp(rng: random.Random, dirt: Dirt) -> str | None:
    if dirt.null_updated_at_rate and rng.random() < dirt.null_updated_at_rate:
        return None
    seconds = _EPOCH_2015 + int(rng.random() * (_EPOCH_2026 - _EPOCH_2015))
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(seconds))


def _rng(table: str, seed: int) -> random.Random:
    return random.Random(f"refsync-demo:{table}:{seed}")


def annuity_plan_row(
    rng: random.Random, code: str, updated_at: str | None, dirt: Dirt = DEMO_DIRT
) -> LegacyRow:
    """(plan_code, plan_name, plan_type, customer_name, updated_at)"""
    company = company_name(rng)
    kind = plan_type(rng)
    customer: str | None = None
    if rng.random() >= dirt.null_customer_rate:
        customer = _dirty(rng, dirt, plan_customer(rng, kind, company))
    return (code, _dirty(rng, dirt, plan_name(rng, kind, company)), kind, customer, updated_at)


def portfolio_plan_row(
    rng: random.Random, code: str, plan: str, updated_at: str | None, dirt: Dirt = DEMO_DIRT
) -> LegacyRow:
    """(portfolio_code, plan_code, portfolio_name, portfolio_type, updated_at)"""
    kind = portfolio_type(rng)
    return (code, plan, _dirty(rng, dirt, portfolio_name(rng, kind)), kind, updated_at)


def organization_row(
    rng: random.Random, code: str, updated_at: str | None, dirt: Dirt = DEMO_DIRT
) -> LegacyRow:
    """(org_code, org_name, updated_at)"""
    return (code, _dirty(rng, dirt, org_name(rng)), updated_at)


def iter_annuity_plan_rows(rows: int, seed: int = 7, dirt: Dirt = DEMO_DIRT) -> Iterator[LegacyRow]:
    """`rows` plans P000001…, in code order; the same seed gives the same rows."""
    rng = _rng("annuity_plan", seed)
    width = code_width(rows, 6)
    for n in range(1, rows + 1):
        yield annuity_plan_row(rng, plan_code(n, width), _timestamp(rng, dirt), dirt)


def iter_portfolio_plan_rows(
    rows: int, plans: int, seed: int = 7, dirt: Dirt = DEMO_DIRT
) -> Iterator[LegacyRow]:
    """`rows` portfolios PF000001…, each referencing one of the `plans` plans P…"""
    rng = _rng("portfolio_plan", seed)
    width = code_width(rows, 6)
    pwidth = code_width(plans, 6)
    for n in range(1, rows + 1):
        plan = plan_code(int(rng.random() * plans) + 1, pwidth)
        yield portfolio_plan_row(rng, portfolio_code(n, width), plan, _timestamp(rng, dirt), dirt)


def iter_organization_rows(rows: int, seed: int = 7, dirt: Dirt = DEMO_DIRT) -> Iterator[LegacyRow]:
    """`rows` organizations ORG00001…, in code order."""
    rng = _rng("organization", seed)
    width = code_width(rows, 5)
    for n in range(1, rows + 1):
        yield organization_row(rng, org_code(n, width), _timestamp(rng, dirt), dirt)


# ---------------------------------------------------------------- the SQLite legacy database


@dataclass(frozen=True)
class LegacyTable:
    name: str
    columns: tuple[str, ...]
    code_column: str
    name_column: str
    prefix: str
    min_width: int


LEGACY_TABLES: tuple[LegacyTable, ...] = (
    LegacyTable("annuity_plan",
                ("plan_code", "plan_name", "plan_type", "customer_name", "updated_at"),
                "plan_code", "plan_name", "P", 6),
    LegacyTable("portfolio_plan",
                ("portfolio_code", "plan_code", "portfolio_name", "portfolio_type", "updated_at"),
                "portfolio_code", "portfolio_name", "PF", 6),
    LegacyTable("organization", ("org_code", "org_name", "updated_at"), "org_code", "org_name",
                "ORG", 5),
)
_BY_NAME = {t.name: t for t in LEGACY_TABLES}

LEGACY_SQLITE_DDL: tuple[str, ...] = tuple(
    statement.strip() for statement in "".join(
        line for line in demo_file("legacy_sqlite.sql").splitlines(keepends=True)
        if not line.startswith("--")).split(";") if statement.strip())
"""The legacy tables in SQLite, shaped like the MySQL ones (`demo_files/legacy_sqlite.sql`
says how)."""


def _insert_sql(table: LegacyTable) -> str:
    marks = ", ".join("?" for _ in table.columns)
    return f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"  # noqa: S608


def build_legacy_sqlite(path: Path, rows: int, seed: int = 7) -> None:
    """(Re)create the three legacy tables in the SQLite file `path`, `rows` rows each."""
    if rows < 0:
        raise ValueError("rows must not be negative")
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Iterator[LegacyRow]] = {
        "annuity_plan": iter_annuity_plan_rows(rows, seed),
        "portfolio_plan": iter_portfolio_plan_rows(rows, max(rows, 1), seed),
        "organization": iter_organization_rows(rows, seed),
    }
    with closing(sqlite3.connect(path)) as conn:
        with conn:
            for table in LEGACY_TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table.name}")
            for ddl in LEGACY_SQLITE_DDL:
                conn.execute(ddl)
            for table in LEGACY_TABLES:
                conn.executemany(_insert_sql(table), data[table.name])


def _now_text(now: datetime | None) -> str:
    zone = ZoneInfo("Asia/Shanghai")
    if now is None:
        now = datetime.now(zone)
    elif now.tzinfo is not None:
        now = now.astimezone(zone)
    return now.strftime(TIMESTAMP_FORMAT)


def mutation_counts(rows: int, fraction: float) -> tuple[int, int, int]:
    """(updates, inserts, deletes) for a table of `rows` rows: ~80/10/10 % of `fraction`."""
    if fraction <= 0 or rows <= 0:
        return (0, 0, 0)
    total = max(1, round(rows * fraction))
    inserts = total // 10
    deletes = total // 10
    return (total - inserts - deletes, inserts, deletes)


def new_name(rng: random.Random, table: str, old: str | None, kind: str | None = None) -> str:
    """A new name for a row of legacy `table`, different from `old`.

    `kind` is the row's plan_type / portfolio_type, so a renamed plan keeps a fitting name.
    """
    for _ in range(100):
        if table == "annuity_plan":
            new = plan_name(rng, kind or "单一计划", company_name(rng))
        elif table == "portfolio_plan":
            new = portfolio_name(rng, kind or PORTFOLIO_TYPES[0])
        else:
            new = org_name(rng)
        if new != old:
            return new
    return f"{old}（更名）"


def mutate_legacy_sqlite(
    path: Path, fraction: float = 0.01, seed: int = 11, now: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Change ~`fraction` of each legacy table: mostly renames, some inserts and deletes.

    Changed and new rows get `updated_at = now` (default: the current Asia/Shanghai wall
    clock, to the second). Deleted plans are picked among those no portfolio references.
    Returns per table {"updated": n, "inserted": n, "deleted": n}, as the database counted.
    """
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be between 0 and 1")
    if not path.is_file():
        raise FileNotFoundError(f"no legacy database at {path}: run build_legacy_sqlite first")
    stamp = _now_text(now)
    rng = random.Random(f"refsync-demo:mutate:{seed}")
    result: dict[str, dict[str, int]] = {}
    with closing(sqlite3.connect(path)) as conn, conn:
        alive_plans: list[str] = []
        for table in LEGACY_TABLES:
            result[table.name], alive = _mutate_table(conn, table, rng, fraction, stamp,
                                                      alive_plans)
            if table.name == "annuity_plan":
                alive_plans = alive
    return result


def _mutate_table(conn: sqlite3.Connection, table: LegacyTable, rng: random.Random,
                  fraction: float, stamp: str, alive_plans: list[str],
                  ) -> tuple[dict[str, int], list[str]]:
    """Rename, delete and insert ~`fraction` of `table`'s rows: the counts, and the codes
    the table holds afterwards (new portfolios reference only plans still there)."""
    kind_col = {"annuity_plan": "plan_type", "portfolio_plan": "portfolio_type"}.get(
        table.name, "NULL")
    current = conn.execute(
        f"SELECT {table.code_column}, {table.name_column}, {kind_col} "  # noqa: S608
        f"FROM {table.name} ORDER BY {table.code_column}"
    ).fetchall()
    n_upd, n_ins, n_del = mutation_counts(len(current), fraction)
    deletable = current
    if table.name == "annuity_plan":
        referenced = {r[0] for r in conn.execute(
            "SELECT DISTINCT plan_code FROM portfolio_plan WHERE plan_code IS NOT NULL")}
        deletable = [r for r in current if r[0] not in referenced] or current
    doomed = rng.sample(deletable, min(n_del, len(deletable)))
    doomed_codes = {r[0] for r in doomed}
    survivors = [r for r in current if r[0] not in doomed_codes]
    changed = rng.sample(survivors, min(n_upd, len(survivors)))
    updated = sum(conn.execute(
        f"UPDATE {table.name} SET {table.name_column} = ?, updated_at = ? "  # noqa: S608
        f"WHERE {table.code_column} = ?",
        (new_name(rng, table.name, row[1], row[2]), stamp, row[0])).rowcount for row in changed)
    deleted = sum(conn.execute(
        f"DELETE FROM {table.name} WHERE {table.code_column} = ?", (row[0],),  # noqa: S608
    ).rowcount for row in doomed)
    new_rows = _new_rows(rng, table, [r[0] for r in current], n_ins, stamp, alive_plans)
    inserted = conn.executemany(_insert_sql(table), new_rows).rowcount if new_rows else 0
    alive = [r[0] for r in survivors] + [r[0] for r in new_rows if r[0]]
    return {"updated": updated, "inserted": inserted, "deleted": deleted}, alive


def _new_rows(
    rng: random.Random, table: LegacyTable, codes: list[str], n: int, stamp: str,
    plans: list[str],
) -> list[LegacyRow]:
    """`n` rows with codes after the highest existing one, same zero padding."""
    numbers = [int(c[len(table.prefix):]) for c in codes if c[len(table.prefix):].isdigit()]
    last = max(numbers, default=0)
    width = max(
        (len(c) - len(table.prefix) for c in codes), default=table.min_width
    )
    out: list[LegacyRow] = []
    for i in range(1, n + 1):
        code = f"{table.prefix}{last + i:0{width}d}"
        if table.name == "annuity_plan":
            out.append(annuity_plan_row(rng, code, stamp))
        elif table.name == "portfolio_plan":
            plan = rng.choice(plans) if plans else plan_code(1, 6)
            out.append(portfolio_plan_row(rng, code, plan, stamp))
        else:
            out.append(organization_row(rng, code, stamp))
    return out


# ---------------------------------------------------------------- product lines YAML


def product_lines_document(description: str | None = None) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "description": description or "产品线 reference data for annuity performance domain",
        "data": product_line_rows(),
    }


def write_product_lines(path: Path) -> None:
    """The 产品线 YAML file: schema_version "1.0", a description and ~8 product lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(
        product_lines_document(), allow_unicode=True, sort_keys=False, default_flow_style=False
    )
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- the demo's config


def _yaml_string(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def demo_config_text(legacy_url: str, product_lines_path: str) -> str:
    """The demo's config: the seed's four tables, with the legacy ones read from `legacy_url`
    (`demo_files/data_sources.template.yml`)."""
    return Template(demo_file("data_sources.template.yml")).substitute(
        legacy_url=_yaml_string(legacy_url), product_lines=_yaml_string(product_lines_path))


# ---------------------------------------------------------------- production DDL


def reference_tables_postgres_ddl(schema: str = "business") -> str:
    """PostgreSQL DDL for the four reference tables with their tracking columns (idempotent):
    what `refsync init-db --print-sql` prints for the seed's config, whose legacy columns
    have the DEMO_TARGET_TYPES. `deploy/sql/reference_tables.sql` is this text."""
    from refsync import ddl
    from refsync.config import ReferenceSyncConfig
    from refsync.targets import pg_ddl

    doc = yaml.safe_load(demo_config_text("sqlite:///legacy.sqlite", "product_lines.yml"))
    specs = ReferenceSyncConfig.model_validate(doc["reference_sync"]).tables
    tables = []
    for spec in specs:
        types = {c: ddl.declared_type(t) for c, t in DEMO_TARGET_TYPES[spec.target_table].items()}
        shape = ddl.SourceShape(list(types), types)
        tables.append(ddl.target_table(spec, shape, schema,
                                       ddl.reference_columns(spec, specs, shape.columns)))
    return pg_ddl.script(tables)
