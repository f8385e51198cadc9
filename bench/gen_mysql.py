"""(Re)create the benchmark's legacy MySQL/MariaDB tables, or mutate a fraction of them.

    uv run python bench/gen_mysql.py --rows 1000000
    uv run python bench/gen_mysql.py --url mysql+pymysql://root@127.0.0.1:3306/refsync_bench
    uv run python bench/gen_mysql.py --tables typed_plan --rows 1000000   # the typed table only
    uv run python bench/gen_mysql.py --mutate 0.01          # or bench/mutate_mysql.py
    uv run python bench/gen_mysql.py --mutate 0.0001 --tables typed_plan

Shape (PEERS.md "Dataset"): `annuity_plan` at --rows, `portfolio_plan` and `organization` at
--small-rows (default rows/10, at least 1,000); utf8mb4 / utf8mb4_general_ci; PK, and an
index on `updated_at` added after the load; dirty on purpose (~2% NULL customer_name, 0.01%
NULL updated_at, 0.1% values with tab/LF/CR/backslash/quotes/emoji/'NULL'/'\\N'/''/blanks).
Rows come from `refsync.demo_data` (the demo's generators), are written as TSV to a temp
file and loaded with `LOAD DATA LOCAL INFILE`; if the server refuses local infile, multi-row
INSERTs of 5,000 rows are used instead.

`typed_plan` (--typed-rows, default --rows) is the typed table of issue 9: `plan_code
varchar(32)` PK, `plan_name varchar(255)`, `amount decimal(18,4)`, `headcount int`, `start_date
date`, `is_active tinyint(1)`, `updated_at datetime`, generated inside MariaDB by one `INSERT ...
SELECT` from the sequence engine (`seq_1_to_N`), deterministic (CRC32 of the row number): ~2 %
NULLs per column (0.01 % for updated_at) and, every 10,007th row, awkward but valid values
(DECIMAL(18,4) extremes and 0.0001, INT extremes, dates 1000-01-01 / 9999-12-31 / 2000-02-29,
DATETIMEs in Asia/Shanghai's 1986-1991 summer time, before 1901 (LMT) and at 9999-12-31
23:59:59, names NULL / '' / 'NULL' / '\\N' / tab / LF / CR / backslash / emoji / blanks).

Only the tables named by --tables (default: all four) are dropped and recreated; the database is
created when missing. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy.engine import make_url

from refsync import demo_data as dd

INSERT_BATCH = 5000
# server/client refusals of LOAD DATA LOCAL: ER_NOT_ALLOWED_COMMAND, MariaDB's
# ER_LOAD_INFILE_CAPABILITY_DISABLED, MySQL 8's ER_CLIENT_LOCAL_FILES_DISABLED,
# CR_LOAD_DATA_LOCAL_INFILE_REJECTED
LOCAL_INFILE_REFUSED = {1148, 4166, 3948, 2068}
TEXT_TABLES = tuple(t.name for t in dd.LEGACY_TABLES)
TYPED = "typed_plan"
TYPED_COLUMNS = ("plan_code", "plan_name", "amount", "headcount", "start_date", "is_active",
                 "updated_at")
ALL_TABLES = (*TEXT_TABLES, TYPED)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    password: str
    database: str

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def mysql_ddl(table: str, fsp: int) -> str:
    dt = "DATETIME" if fsp == 0 else f"DATETIME({fsp})"
    columns = {
        "annuity_plan": """
  plan_code VARCHAR(20) NOT NULL,
  plan_name VARCHAR(255) NULL,
  plan_type VARCHAR(50) NULL,
  customer_name VARCHAR(255) NULL,
  updated_at {dt} NULL,
  PRIMARY KEY (plan_code)""",
        "portfolio_plan": """
  portfolio_code VARCHAR(20) NOT NULL,
  plan_code VARCHAR(20) NULL,
  portfolio_name VARCHAR(255) NULL,
  portfolio_type VARCHAR(50) NULL,
  updated_at {dt} NULL,
  PRIMARY KEY (portfolio_code)""",
        "organization": """
  org_code VARCHAR(20) NOT NULL,
  org_name VARCHAR(255) NULL,
  updated_at {dt} NULL,
  PRIMARY KEY (org_code)""",
    }[table].format(dt=dt)
    return (
        f"CREATE TABLE `{table}` ({columns}\n) ENGINE=InnoDB"
        " DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
    )


# ---------------------------------------------------------------- TSV for LOAD DATA

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def tsv_field(value: str | None) -> str:
    """LOAD DATA's default format: \\N is NULL; backslash, tab, LF, CR, NUL escaped."""
    if value is None:
        return "\\N"
    if value.isprintable() and "\\" not in value:
        return value
    return value.translate(_ESCAPES)


def write_tsv(path: Path, rows: Iterable[dd.LegacyRow]) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        buf: list[str] = []
        for row in rows:
            buf.append("\t".join([tsv_field(v) for v in row]))
            n += 1
            if len(buf) >= 50_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    return n


# ---------------------------------------------------------------- the typed table (issue 9)


TYPED_DDL = """CREATE TABLE `typed_plan` (
  plan_code VARCHAR(32) NOT NULL,
  plan_name VARCHAR(255) NULL,
  amount DECIMAL(18,4) NULL,
  headcount INT NULL,
  start_date DATE NULL,
  is_active TINYINT(1) NULL,
  updated_at {dt} NULL,
  PRIMARY KEY (plan_code)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"""

AWKWARD_EVERY = 10_007  # row numbers n with n % 10007 == k get the k-th awkward value
AWKWARD_NAMES = (None, "", "NULL", "\\N", "tab\there", "line\nbreak", "cr\rhere",
                 "back\\slash", "emoji 😀 计划", "  blanks  ", "quote ' \" `")
AWKWARD_AMOUNTS = ("99999999999999.9999", "-99999999999999.9999", "0.0000", "0.0001",
                   "-0.0001", "100.5000")
AWKWARD_HEADCOUNTS = (2147483647, -2147483648, 0, -1)
AWKWARD_DATES = ("1000-01-01", "9999-12-31", "2000-02-29", "1970-01-01", "1986-05-04")
AWKWARD_DATETIMES = (  # valid naive wall times; no gap/overlap hour of Asia/Shanghai
    "1986-07-01 12:00:00", "1988-04-17 03:30:00", "1991-09-15 00:30:00", "1989-09-17 02:30:00",
    "1970-01-01 00:00:00", "2038-01-19 03:14:08", "9999-12-31 23:59:59", "1000-01-01 00:00:00",
    "1900-06-30 12:34:56")
COMPANIES = ("甘肃中电电力集团股份有限公司", "上海浦东发展银行", "中国石油天然气集团",
             "北京首都机场股份有限公司", "广东省交通集团", "招商局集团有限公司",
             "江苏沙钢集团", "四川长虹电子控股集团", "云南白药集团", "浙江吉利控股集团",
             "中国移动通信集团", "深圳市地铁集团")
PLAN_KINDS = ("企业年金计划", "职业年金计划", "集合计划", "单一计划")


def typed_insert_sql(rows: int, seed: int) -> tuple[str, list[Any]]:
    """One INSERT ... SELECT from `seq_1_to_<rows>`, and its parameters (the awkward values)."""
    width = max(7, len(str(rows)))
    params: list[Any] = []

    def h(tag: str) -> str:  # a deterministic 32-bit pseudo-random number per row and column
        return f"CRC32(CONCAT('{seed}:{tag}:', seq))"

    def awkward(values: Sequence[Any], first: int, normal: str) -> str:
        whens = []
        for i, v in enumerate(values):
            whens.append(f"WHEN {first + i} THEN %s")
            params.append(v)
        return f"CASE MOD(seq, {AWKWARD_EVERY}) {' '.join(whens)} ELSE {normal} END"

    companies = ", ".join(f"'{c}'" for c in COMPANIES)
    kinds = ", ".join(f"'{k}'" for k in PLAN_KINDS)
    name = awkward(AWKWARD_NAMES, 1, (
        f"IF(MOD({h('n')}, 50) = 0, NULL, CONCAT(ELT(1 + MOD({h('c')}, {len(COMPANIES)}),"
        f" {companies}), ELT(1 + MOD({h('k')}, {len(PLAN_KINDS)}), {kinds}), seq))"))
    amount = awkward(AWKWARD_AMOUNTS, 21, (
        f"IF(MOD({h('a')}, 50) = 1, NULL,"
        f" CAST(MOD({h('A')}, 10000000000) / 10000 - 1000 AS DECIMAL(18,4)))"))
    headcount = awkward(AWKWARD_HEADCOUNTS, 31, (
        f"IF(MOD({h('h')}, 50) = 2, NULL, MOD({h('H')}, 200000))"))
    start = awkward(AWKWARD_DATES, 41, (
        f"IF(MOD({h('d')}, 50) = 3, NULL, DATE '2000-01-01' + INTERVAL MOD({h('D')}, 9500) DAY)"))
    active = f"IF(MOD({h('b')}, 50) = 4, NULL, MOD({h('B')}, 2))"
    updated = awkward(AWKWARD_DATETIMES, 51, (
        f"IF(MOD({h('u')}, 10000) = 5, NULL,"
        f" TIMESTAMP '2015-01-01 00:00:00' + INTERVAL MOD({h('U')}, 347000000) SECOND)"))
    sql = (f"INSERT INTO `{TYPED}` ({', '.join(TYPED_COLUMNS)})"
           f" SELECT CONCAT('T', LPAD(seq, {width}, '0')), {name}, {amount}, {headcount},"
           f" {start}, {active}, {updated} FROM seq_1_to_{rows}")
    return sql, params


def generate_typed(conn: Any, rows: int, seed: int, fsp: int) -> dict[str, Any]:
    dt = "DATETIME" if fsp == 0 else f"DATETIME({fsp})"
    t0 = time.perf_counter()
    sql, params = typed_insert_sql(rows, seed)
    with conn.cursor() as cur:
        cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
        cur.execute(f"DROP TABLE IF EXISTS `{TYPED}`")
        cur.execute(TYPED_DDL.format(dt=dt))
        n = cur.execute(sql, params)
        warnings = cur.execute("SHOW WARNINGS")
        if warnings:
            raise SystemExit(f"{TYPED}: INSERT ... SELECT gave {warnings} warnings:"
                             f" {cur.fetchmany(5)}")
        conn.commit()
        t1 = time.perf_counter()
        cur.execute(f"ALTER TABLE `{TYPED}` ADD INDEX `ix_{TYPED}_updated_at` (updated_at)")
        cur.execute(f"SELECT COUNT(*) FROM `{TYPED}`")
        (count,) = cur.fetchone()
    if count != n or n != rows:
        raise SystemExit(f"{TYPED}: inserted {n} rows, the table holds {count}, wanted {rows}")
    t2 = time.perf_counter()
    timings = {"insert_select_s": t1 - t0, "index_s": t2 - t1, "total_s": t2 - t0}
    print(f"{TYPED}: {n:,} rows via INSERT ... SELECT FROM seq_1_to_{rows} in"
          f" {timings['total_s']:.1f}s (index {timings['index_s']:.1f})", file=sys.stderr)
    return {"rows": n, "method": "insert_select_seq", **{k: round(v, 2)
                                                          for k, v in timings.items()}}


def mutate_typed(cur: Any, rng: random.Random, now: datetime, fraction: float) -> dict[str, int]:
    """Change ~fraction of typed_plan's rows: new name, amount +/- 1, updated_at = now."""
    cur.execute(f"SELECT COUNT(*), MAX(CAST(SUBSTRING(plan_code, 2) AS UNSIGNED)),"
                f" MAX(CHAR_LENGTH(plan_code)) - 1 FROM `{TYPED}`")
    count, top, width = cur.fetchone()
    top, width = int(top or 0), int(width or 7)
    n_upd = round(count * fraction)
    picks = [f"T{n:0{width}d}" for n in rng.sample(range(1, top + 1), min(top, n_upd))]
    if not picks:
        return {"updated": 0, "inserted": 0, "deleted": 0}
    cur.execute("DROP TEMPORARY TABLE IF EXISTS _refsync_mut")
    cur.execute("CREATE TEMPORARY TABLE _refsync_mut (code VARCHAR(32) PRIMARY KEY,"
                " name VARCHAR(255)) DEFAULT CHARSET=utf8mb4")
    cur.executemany("INSERT INTO _refsync_mut (code, name) VALUES (%s, %s)",
                    [(c, f"{rng.choice(COMPANIES)}{rng.choice(PLAN_KINDS)}（调整"
                         f"{rng.randrange(10**6)}）") for c in picks])
    updated = cur.execute(
        f"UPDATE `{TYPED}` t JOIN _refsync_mut m ON t.plan_code = m.code SET t.plan_name ="
        " m.name, t.amount = IF(t.amount > 0, t.amount - 1, IFNULL(t.amount, 0) + 1),"
        " t.updated_at = %s", (now,))
    cur.execute("DROP TEMPORARY TABLE _refsync_mut")
    return {"updated": updated, "inserted": 0, "deleted": 0}


# ---------------------------------------------------------------- generate


def table_rows(table: str, rows: int, small: int, seed: int) -> Iterator[dd.LegacyRow]:
    if table == "annuity_plan":
        return dd.iter_annuity_plan_rows(rows, seed, dd.BENCH_DIRT)
    if table == "portfolio_plan":
        return dd.iter_portfolio_plan_rows(small, rows, seed, dd.BENCH_DIRT)
    return dd.iter_organization_rows(small, seed, dd.BENCH_DIRT)


def connect(t: Target, *, database: bool = True, local_infile: bool = True) -> Any:
    return pymysql.connect(
        host=t.host, port=t.port, user=t.user, password=t.password,
        database=t.database if database else None, charset="utf8mb4",
        local_infile=local_infile, autocommit=False, connect_timeout=30,
    )


def load_table(
    conn: Any, table: dd.LegacyTable, rows: Iterator[dd.LegacyRow], tmpdir: Path,
    use_infile: bool,
) -> tuple[int, str, dict[str, float]]:
    """Load one table; returns (rows, method, timings). The TSV file lives in `tmpdir`."""
    timings: dict[str, float] = {}
    cols = ", ".join(f"`{c}`" for c in table.columns)
    with conn.cursor() as cur:
        if use_infile:
            path = tmpdir / f"{table.name}.tsv"
            t0 = time.perf_counter()
            n = write_tsv(path, rows)
            timings["generate_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table.name}` CHARACTER SET utf8mb4"
                    " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
                    f" ({cols})",
                    (str(path),),
                )
                warnings = cur.execute("SHOW WARNINGS")
                if warnings:
                    sample = cur.fetchmany(5)
                    raise SystemExit(f"{table.name}: LOAD DATA gave {warnings} warnings: {sample}")
                conn.commit()
                timings["load_s"] = time.perf_counter() - t0
                path.unlink()
                return n, "load_data_local_infile", timings
            except pymysql.err.MySQLError as exc:
                conn.rollback()
                if not (exc.args and exc.args[0] in LOCAL_INFILE_REFUSED):
                    raise
                print(f"LOAD DATA LOCAL refused ({exc.args[0]}); using INSERT batches",
                      file=sys.stderr)
                rows = iter_tsv(path)
        marks = ", ".join("%s" for _ in table.columns)
        sql = f"INSERT INTO `{table.name}` ({cols}) VALUES ({marks})"
        t0 = time.perf_counter()
        n = 0
        batch: list[dd.LegacyRow] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= INSERT_BATCH:
                cur.executemany(sql, batch)
                n += len(batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
            n += len(batch)
        conn.commit()
        timings["insert_s"] = time.perf_counter() - t0
        return n, "insert_batches", timings


_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r", "\\0": "\0"}
_ESCAPED = re.compile(r"\\[\\tnr0]")


def iter_tsv(path: Path) -> Iterator[dd.LegacyRow]:
    """The rows of a file written by `write_tsv` (for the INSERT fallback)."""
    with path.open(encoding="utf-8", newline="\n") as f:
        for line in f:
            yield tuple(
                None if v == "\\N" else _ESCAPED.sub(lambda m: _UNESCAPE[m[0]], v)
                for v in line.rstrip("\n").split("\t")
            )


def generate(
    t: Target, rows: int, small: int, seed: int, fsp: int, use_infile: bool,
    tables: Sequence[str] = ALL_TABLES, typed_rows: int | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {"target": t.describe(), "seed": seed, "tables": {}}
    started = time.perf_counter()
    with connect(t, database=False) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE IF NOT EXISTS `{t.database}`"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        )
    with connect(t, local_infile=use_infile) as conn, tempfile.TemporaryDirectory(
        prefix="refsync-bench-"
    ) as tmp:
        text_tables = [tb for tb in dd.LEGACY_TABLES if tb.name in tables]
        with conn.cursor() as cur:
            cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
            for table in text_tables:
                cur.execute(f"DROP TABLE IF EXISTS `{table.name}`")
                cur.execute(mysql_ddl(table.name, fsp))
        for table in text_tables:
            t0 = time.perf_counter()
            n, method, timings = load_table(
                conn, table, table_rows(table.name, rows, small, seed), Path(tmp), use_infile
            )
            t1 = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(f"ALTER TABLE `{table.name}`"
                            f" ADD INDEX `ix_{table.name}_updated_at` (updated_at)")
                cur.execute(f"SELECT COUNT(*) FROM `{table.name}`")
                (count,) = cur.fetchone()
            if count != n:
                raise SystemExit(f"{table.name}: wrote {n} rows but the table holds {count}")
            timings["index_s"] = time.perf_counter() - t1
            timings["total_s"] = time.perf_counter() - t0
            report["tables"][table.name] = {
                "rows": n, "method": method, **{k: round(v, 2) for k, v in timings.items()}
            }
            print(f"{table.name}: {n:,} rows via {method} in {timings['total_s']:.1f}s "
                  f"({', '.join(f'{k} {v:.1f}' for k, v in timings.items() if k != 'total_s')})",
                  file=sys.stderr)
        if TYPED in tables and (typed_rows if typed_rows is not None else rows) > 0:
            report["tables"][TYPED] = generate_typed(
                conn, typed_rows if typed_rows is not None else rows, seed, fsp)
    report["total_s"] = round(time.perf_counter() - started, 2)
    return report


# ---------------------------------------------------------------- mutate


def mutate(
    t: Target, fraction: float, insert_fraction: float, delete_fraction: float, seed: int,
    tables: Sequence[str] = TEXT_TABLES,
) -> dict[str, Any]:
    """Rename ~fraction of each table's rows (updated_at = NOW(6)); optionally insert/delete
    (text tables only: typed_plan gets updates alone).

    One transaction. Counts are what the server reported.
    """
    rng = random.Random(f"refsync-bench:mutate:{seed}" if seed >= 0 else None)
    report: dict[str, Any] = {"target": t.describe(), "tables": {}}
    started = time.perf_counter()
    with connect(t, local_infile=False) as conn, conn.cursor() as cur:
        cur.execute("SELECT NOW(6)")
        (now,) = cur.fetchone()
        report["now"] = now.isoformat()
        top_plan = 1
        if set(tables) & set(TEXT_TABLES):
            cur.execute("SELECT MAX(CAST(SUBSTRING(plan_code, 2) AS UNSIGNED))"
                        " FROM annuity_plan")
            (top_plan,) = cur.fetchone()
            top_plan = int(top_plan or 1)
        for table in dd.LEGACY_TABLES:
            if table.name in tables:
                report["tables"][table.name] = _mutate_table(
                    cur, rng, table, now, fraction, insert_fraction, delete_fraction, top_plan
                )
        if TYPED in tables:
            report["tables"][TYPED] = mutate_typed(cur, rng, now, fraction)
        conn.commit()
    report["total_s"] = round(time.perf_counter() - started, 2)
    return report


def _mutate_table(
    cur: Any, rng: random.Random, table: dd.LegacyTable, now: datetime, fraction: float,
    insert_fraction: float, delete_fraction: float, top_plan: int,
) -> dict[str, int]:
    code_col, name_col = table.code_column, table.name_column
    kind_col = {"annuity_plan": "plan_type", "portfolio_plan": "portfolio_type"}.get(
        table.name, "NULL")
    p = len(table.prefix) + 1
    cur.execute(
        f"SELECT COUNT(*), MAX(CAST(SUBSTRING({code_col}, {p}) AS UNSIGNED)),"
        f" MAX(CHAR_LENGTH({code_col})) - {p - 1} FROM `{table.name}`"
    )
    count, top, width = cur.fetchone()
    top, width = int(top or 0), int(width or table.min_width)
    code = f"{table.prefix}{{:0{width}d}}".format
    n_upd, n_del, n_ins = (round(count * f) for f in (fraction, delete_fraction, insert_fraction))
    # codes are numbered densely from 1, so sample numbers and keep those that exist
    picks = [code(n) for n in rng.sample(range(1, top + 1), min(top, n_upd + n_del))]
    existing: list[tuple[str, str | None, str | None]] = []
    for i in range(0, len(picks), INSERT_BATCH):
        chunk = picks[i:i + INSERT_BATCH]
        cur.execute(
            f"SELECT {code_col}, {name_col}, {kind_col} FROM `{table.name}`"
            f" WHERE {code_col} IN ({', '.join('%s' for _ in chunk)})",
            chunk,
        )
        existing.extend(cur.fetchall())
    rng.shuffle(existing)
    doomed, renamed = existing[:n_del], existing[n_del:]
    counts = {"updated": 0, "inserted": 0, "deleted": 0}
    if renamed:
        cur.execute("DROP TEMPORARY TABLE IF EXISTS _refsync_mut")
        cur.execute("CREATE TEMPORARY TABLE _refsync_mut (code VARCHAR(20) PRIMARY KEY,"
                    " name VARCHAR(255)) DEFAULT CHARSET=utf8mb4")
        cur.executemany(
            "INSERT INTO _refsync_mut (code, name) VALUES (%s, %s)",
            [(c, dd.new_name(rng, table.name, old, kind)) for c, old, kind in renamed],
        )
        counts["updated"] = cur.execute(
            f"UPDATE `{table.name}` t JOIN _refsync_mut m ON t.{code_col} = m.code"
            f" SET t.{name_col} = m.name, t.updated_at = %s",
            (now,),
        )
        cur.execute("DROP TEMPORARY TABLE _refsync_mut")
    for i in range(0, len(doomed), INSERT_BATCH):
        chunk = [c for c, _old, _kind in doomed[i:i + INSERT_BATCH]]
        counts["deleted"] += cur.execute(
            f"DELETE FROM `{table.name}` WHERE {code_col} IN ({', '.join('%s' for _ in chunk)})",
            chunk,
        )
    if n_ins:
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        pwidth = dd.code_width(top_plan, 6)
        new: list[dd.LegacyRow] = []
        for i in range(1, n_ins + 1):
            c = code(top + i)
            if table.name == "annuity_plan":
                new.append(dd.annuity_plan_row(rng, c, stamp, dd.BENCH_DIRT))
            elif table.name == "portfolio_plan":
                plan = dd.plan_code(rng.randint(1, top_plan), pwidth)
                new.append(dd.portfolio_plan_row(rng, c, plan, stamp, dd.BENCH_DIRT))
            else:
                new.append(dd.organization_row(rng, c, stamp, dd.BENCH_DIRT))
        marks = ", ".join("%s" for _ in table.columns)
        for i in range(0, len(new), INSERT_BATCH):
            counts["inserted"] += cur.executemany(
                f"INSERT INTO `{table.name}` ({', '.join(table.columns)}) VALUES ({marks})",
                new[i:i + INSERT_BATCH],
            )
    return counts


# ---------------------------------------------------------------- CLI


def parse_target(args: argparse.Namespace) -> Target:
    if args.url:
        url = make_url(args.url)
        if not url.drivername.startswith(("mysql", "mariadb")):
            raise SystemExit(f"--url must be a mysql:// or mariadb:// URL, not {url.drivername}")
        return Target(
            host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
            password=url.password or "", database=url.database or "refsync_bench",
        )
    return Target(args.host, args.port, args.user, args.password, args.database)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="mysql+pymysql://user[:password]@host:port/database"
                   " (overrides --host/--port/--user/--password/--database)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", default="root")
    p.add_argument("--password", default=os.environ.get("REFSYNC_BENCH_MYSQL_PASSWORD", ""),
                   help="default: $REFSYNC_BENCH_MYSQL_PASSWORD, else empty")
    p.add_argument("--database", default="refsync_bench")
    p.add_argument("--rows", type=int, default=1_000_000, help="annuity_plan rows (1,000,000)")
    p.add_argument("--small-rows", type=int,
                   help="portfolio_plan and organization rows (default: rows/10, at least 1000)")
    p.add_argument("--typed-rows", type=int,
                   help="typed_plan rows (default: --rows; 0 = do not create it)")
    p.add_argument("--tables", help="comma list of tables to (re)create or mutate (default:"
                   f" generate all of {', '.join(ALL_TABLES)}; mutate the three text tables)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fsp", type=int, choices=(0, 3, 6), default=0,
                   help="fractional seconds of updated_at: DATETIME (0, default) or DATETIME(6)")
    p.add_argument("--no-local-infile", action="store_true",
                   help="use multi-row INSERT batches instead of LOAD DATA LOCAL INFILE")
    p.add_argument("--mutate", type=float, metavar="FRACTION",
                   help="instead of generating: rename ~FRACTION of each table's rows"
                   " (updated_at = NOW(6)), e.g. 0.01 or 0.0001")
    p.add_argument("--insert-fraction", type=float, default=0.0,
                   help="with --mutate: also insert this fraction of new rows (0)")
    p.add_argument("--delete-fraction", type=float, default=0.0,
                   help="with --mutate: also delete this fraction of rows (0)")
    p.add_argument("--mutate-seed", type=int, default=-1,
                   help="with --mutate: a fixed seed (default -1: different rows every run)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = parse_target(args)
    tables = None if not args.tables else [x.strip() for x in args.tables.split(",") if x.strip()]
    unknown = [x for x in tables or () if x not in ALL_TABLES]
    if unknown:
        raise SystemExit(f"--tables: unknown {unknown}; choose from {', '.join(ALL_TABLES)}")
    if args.mutate is not None:
        for name in ("mutate", "insert_fraction", "delete_fraction"):
            if not 0 <= getattr(args, name) <= 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be between 0 and 1")
        report = mutate(target, args.mutate, args.insert_fraction, args.delete_fraction,
                        args.mutate_seed, tables or TEXT_TABLES)
    else:
        if args.rows < 1:
            raise SystemExit("--rows must be at least 1")
        small = args.small_rows if args.small_rows is not None else max(1000, args.rows // 10)
        report = generate(target, args.rows, small, args.seed, args.fsp, not args.no_local_infile,
                          tables or ALL_TABLES, args.typed_rows)
    print(json.dumps(report, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
