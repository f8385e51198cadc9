"""refsync benchmark: MariaDB/MySQL -> PostgreSQL, refsync against its peers, same data, same run.

    uv run python bench/run.py                                  # 1,000,000 rows, 3 repeats
    uv run python bench/run.py --rows 100000 --repeat 1         # a quick end-to-end check
    uv run python bench/run.py --scenarios full,nochange --skip-gen

Generates the legacy tables with bench/gen_mysql.py, creates its own PostgreSQL databases
(refsync_bench_target, _target_4t, _target_small, _target_10k, refsync_bench_peers: dropped and
recreated at the start), runs `refsync sync -c <generated config> --json` as a subprocess for each
scenario of issue 4 and, interleaved with it (A B A B ...), the peers that are installed: the raw
`mariadb | psql \\copy` pipe, pgloader and Sling. Every timed run gets an untimed CHECKPOINT first;
it measures wall time, peak RSS (psutil polling every 20 ms of the process tree, and the
wait4() max RSS of the largest single process, as `/usr/bin/time -v` reports it), client CPU,
mysqld/postgres CPU, WAL bytes (`pg_current_wal_lsn()` before and after) and, where it matters,
how many target rows got a new row version (primary key + xmin snapshot before, compared after).
Prints paired ratios, the goals of issue 4 met / not met and a Markdown table; every raw figure
goes to --out (JSON). See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psutil
import psycopg
import pymysql
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

SCENARIOS = ("full", "nochange", "1pct-full", "1pct-incr", "incr-nochange-4tables", "startup",
             "memory-scaling", "seed-4tables-10k")
PEERS = ("pipe", "pgloader", "sling")

# the seed's tables: target name -> (schema, table, key column)
TARGETS = {
    "年金计划": ("business", "年金计划", "年金计划号"),
    "组合计划": ("business", "组合计划", "组合代码"),
    "组织架构": ("business", "组织架构", "组织代码"),
    "产品线": ("business", "产品线", "产品线代码"),
}
ANNUITY = TARGETS["年金计划"]
ANNUITY_COLS = ["plan_code", "plan_name", "plan_type", "customer_name", "updated_at"]
ANNUITY_TARGET_COLS = ["年金计划号", "计划名称", "计划类型", "客户名称"]  # = the seed's mapping
SLING_NOCHANGE_REFERENCE_S = 0.50  # issue 4's figure, used only when Sling is not installed

DB_TARGET = "refsync_bench_target"
DB_TARGET_4T = "refsync_bench_target_4t"
DB_TARGET_SMALL = "refsync_bench_target_small"
DB_TARGET_10K = "refsync_bench_target_10k"
DB_PEERS = "refsync_bench_peers"
BENCH_LOCK = 0x72656673796E6362  # "refsyncb": one benchmark at a time per PostgreSQL server


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def median(xs: Iterable[float]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.median(v) if v else None


def mb(n: float | None) -> float | None:
    return None if n is None else n / 1e6


def fmt(x: float | None, nd: int = 2, dash: str = "–") -> str:
    return dash if x is None else f"{x:.{nd}f}"


# ---------------------------------------------------------------- connections


@dataclass(frozen=True)
class MySQL:
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def parse(cls, url: str) -> MySQL:
        u = urlsplit(url)
        if not u.scheme.startswith(("mysql", "mariadb")):
            raise SystemExit(f"--mysql-url must be mysql+pymysql://..., not {u.scheme}")
        return cls(u.hostname or "127.0.0.1", u.port or 3306, unquote(u.username or "root"),
                   unquote(u.password or ""), (u.path or "/refsync_bench").lstrip("/")
                   or "refsync_bench")

    def url(self, db: str, scheme: str = "mysql+pymysql") -> str:
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}"
                                            if self.password else "")
        return f"{scheme}://{auth}@{self.host}:{self.port}/{db}"

    def connect(self, db: str | None = None) -> Any:
        """A connection to `db` (None: the --mysql-url database; "": no database)."""
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password,
                               database=(self.database if db is None else db) or None,
                               charset="utf8mb4", autocommit=True, connect_timeout=30)

    def env(self, db: str) -> dict[str, str]:
        return {"WDH_LEGACY_MYSQL_HOST": self.host, "WDH_LEGACY_MYSQL_PORT": str(self.port),
                "WDH_LEGACY_MYSQL_USER": self.user, "WDH_LEGACY_MYSQL_PASSWORD": self.password,
                "WDH_LEGACY_MYSQL_DATABASE": db}

    def query(self, sql: str, args: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        with self.connect(db) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())


@dataclass(frozen=True)
class PG:
    admin_url: str

    def url(self, db: str, *, sslmode: bool = False) -> str:
        u = urlsplit(self.admin_url)
        q = dict(parse_qsl(u.query))
        if sslmode:
            q.setdefault("sslmode", "disable")
        scheme = "postgresql" if u.scheme.startswith("postgres") else u.scheme
        return urlunsplit((scheme, u.netloc, "/" + db, urlencode(q), ""))

    def connect(self, db: str | None = None) -> psycopg.Connection[Any]:
        url = self.admin_url if db is None else self.url(db)
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                               autocommit=True)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ref(schema: str, table: str) -> str:
    return f"{qi(schema)}.{qi(table)}"


# ---------------------------------------------------------------- measuring one command


def server_cpu() -> dict[str, float]:
    """CPU seconds used so far by mysqld and by the postgres cluster (reaped backends too)."""
    out = {"mysqld": 0.0, "postgres": 0.0}
    procs = {}
    for p in psutil.process_iter(["name", "ppid"]):
        procs[p.pid] = p
    for p in procs.values():
        name = p.info["name"] or ""
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if name in ("mariadbd", "mysqld"):
            out["mysqld"] += t.user + t.system
        elif name == "postgres":
            parent = procs.get(p.info["ppid"])
            out["postgres"] += t.user + t.system
            if parent is None or (parent.info["name"] or "") != "postgres":  # the postmaster
                out["postgres"] += t.children_user + t.children_system
    return out


def _poll_rss(pid: int, stop: threading.Event, out: dict[str, int], every: float = 0.02) -> None:
    peak = 0
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        out["tree_peak"] = 0
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        peak = max(peak, total)
        stop.wait(every)
    out["tree_peak"] = peak


def quiesce(max_wait: float, threshold: float = 25.0) -> tuple[float, float]:
    """Wait (up to `max_wait` s) until the machine's CPU is below `threshold` % busy for 0.5 s:
    other work on the box (tests, builds) would otherwise land in one run and not the next.
    Returns (busy % of the last sample, seconds waited)."""
    t0 = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=0.5)
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_wait:
            return busy, waited


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)


def run_measured(cmd: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path,
                 pg: PG | None, checkpoint: bool = True,
                 quiesce_s: float = 0.0) -> dict[str, Any]:
    """Run `cmd` once; wall, peak RSS, CPU, server CPU and WAL. stdout/stderr go to `log`.*"""
    admin = pg.connect() if pg is not None else None
    try:
        lsn0 = lsn1 = None
        if admin is not None and checkpoint:
            admin.execute("CHECKPOINT")
        busy_before, waited = quiesce(quiesce_s) if quiesce_s > 0 else (None, 0.0)
        if admin is not None:
            lsn0 = admin.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        cpu0 = server_cpu()
        all0 = _busy_cpu_s()
        out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
        stop = threading.Event()
        polled: dict[str, int] = {}
        with out_path.open("wb") as fo, err_path.open("wb") as fe:
            t0 = time.perf_counter()
            proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=fo, stderr=fe)
            poller = threading.Thread(target=_poll_rss, args=(proc.pid, stop, polled),
                                      daemon=True)
            poller.start()
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            stop.set()
            poller.join()
        all1 = _busy_cpu_s()
        wal = None
        if admin is not None:
            time.sleep(0.3)  # let the postmaster reap the client's backends (their CPU)
            lsn1 = admin.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            wal = admin.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)",
                                (lsn1, lsn0)).fetchone()[0]
        cpu1 = server_cpu()
    finally:
        if admin is not None:
            admin.close()
    maxrss = ru.ru_maxrss * 1024  # kB on Linux: the largest single process (wait4 rusage)
    tree = polled.get("tree_peak", 0)
    client = ru.ru_utime + ru.ru_stime
    mysqld = cpu1["mysqld"] - cpu0["mysqld"]
    postgres = cpu1["postgres"] - cpu0["postgres"]
    return {
        "cmd": [c if len(c) < 300 else c[:300] + "…" for c in cmd],
        "rc": proc.returncode, "wall_s": wall,
        "peak_rss_bytes": max(maxrss, tree), "tree_peak_rss_bytes": tree,
        "maxrss_bytes": maxrss, "cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime,
        "mysqld_cpu_s": mysqld, "postgres_cpu_s": postgres,
        # everything else the machine did meanwhile (other sessions' tests, daemons)
        "other_cpu_s": max(0.0, (all1 - all0) - client - mysqld - postgres),
        "busy_pct_before": busy_before, "quiesce_wait_s": waited,
        "wal_bytes": None if wal is None else int(wal), "lsn0": lsn0, "lsn1": lsn1,
        "stdout_file": str(out_path), "stderr_file": str(err_path),
    }


_WAL_TOT = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class WalAttributor:
    """WAL bytes of the records that touch one database, from pg_waldump: other sessions
    working on the same cluster would otherwise count in a run's WAL."""

    SLOT = "refsync_bench_wal"

    def __init__(self, pg: PG) -> None:
        self.pg = pg
        self.exe: str | None = None
        self.waldir: str | None = None
        self.why = ""
        try:
            with pg.connect() as c:
                major = int(c.execute("SHOW server_version_num").fetchone()[0]) // 10000
                datadir = c.execute("SHOW data_directory").fetchone()[0]
        except psycopg.Error as exc:
            self.why = f"cannot ask the server: {exc}"
            return
        for cand in (f"/usr/lib/postgresql/{major}/bin/pg_waldump", shutil.which("pg_waldump")):
            if cand and Path(cand).is_file():
                self.exe = cand
                break
        waldir = Path(datadir) / "pg_wal"
        if self.exe is None:
            self.why = "pg_waldump not found"
        elif not os.access(waldir, os.R_OK | os.X_OK):
            self.why = f"{waldir} is not readable (run as root or postgres)"
            self.exe = None
        else:
            self.waldir = str(waldir)
            self.release()

    def reserve(self) -> None:
        """Keep the run's WAL on disk until it is read: another session's CHECKPOINT would
        otherwise recycle the segments (a physical slot reserving WAL from now on)."""
        if self.exe:
            self.release()
            with self.pg.connect() as c:
                c.execute("SELECT pg_create_physical_replication_slot(%s, true)", (self.SLOT,))

    def release(self) -> None:
        with self.pg.connect() as c:
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                      " WHERE slot_name = %s", (self.SLOT,))

    def bytes_for(self, lsn0: str | None, lsn1: str | None, dboid: int) -> int | None:
        if not (self.exe and self.waldir and lsn0 and lsn1) or lsn0 == lsn1:
            return 0 if (self.exe and lsn0 and lsn0 == lsn1) else None
        needle = f"/{dboid}/"
        total = records = 0
        with subprocess.Popen([self.exe, "-p", self.waldir, "-s", lsn0, "-e", lsn1],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              errors="replace") as p:
            assert p.stdout is not None and p.stderr is not None
            for line in p.stdout:
                records += 1
                if needle in line:
                    m = _WAL_TOT.search(line)
                    if m:
                        total += int(m.group(1))
            err = p.stderr.read()
        if records == 0:  # could not read the range at all
            say(f"  pg_waldump {lsn0}..{lsn1}: {err.strip()[:200]}")
            return None
        return total


def code_version() -> str:
    """A short hash of refsync's source as it is on disk now (it may be edited while we run)."""
    h = hashlib.sha1()
    for f in sorted((ROOT / "src").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def wal_of(r: dict[str, Any]) -> int | None:
    """The run's own WAL: its database's records when pg_waldump could tell, else the cluster's."""
    w = r.get("wal_db_bytes")
    return w if w is not None else r.get("wal_bytes")


def tail(path: str | Path, n: int = 8) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: int = args.rows
        self.repeat: int = args.repeat
        self.small_rows = max(1000, self.rows // 10)
        self.mysql = MySQL.parse(args.mysql_url)
        self.pg = PG(args.pg_url)
        self.db_main = self.mysql.database
        self.db_small = f"{self.db_main}_small"
        self.db_10k = f"{self.db_main}_10k"
        self.scenarios = [s for s in SCENARIOS if s in args.scenarios]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = (Path(args.out) if args.out else BENCH / "out" / f"results-{stamp}.json"
                    ).resolve()
        self.work = self.out.parent / (self.out.stem + ".d")
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        (self.work / "configs").mkdir(parents=True, exist_ok=True)
        self.refsync = str(Path(args.refsync).resolve())
        self.runs: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.checks: dict[str, Any] = {}
        self.gen: dict[str, Any] = {}
        self.peers: dict[str, Any] = {}
        self.mutations = 0
        self.started = datetime.now().astimezone()
        self.wal: WalAttributor | None = None
        self._oids: dict[str, int] = {}

    # -- environment

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("WDH_", "MYSQL_", "SLING_"))}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def refsync_env(self, pg_db: str, mysql_db: str) -> dict[str, str]:
        env = self.base_env()
        env["WDH_DATABASE_URL"] = self.pg.url(pg_db)
        env.update(self.mysql.env(mysql_db))
        return env

    def detect_peers(self) -> None:
        wanted = [p for p in PEERS if p in self.args.peers]
        found: dict[str, Any] = {}
        if "pipe" in wanted:
            client = shutil.which("mariadb") or shutil.which("mysql")
            psql = shutil.which("psql")
            if client and psql:
                found["pipe"] = {"mysql": client, "psql": psql,
                                 "version": self._version([client, "--version"]) + " | "
                                 + self._version([psql, "--version"])}
            else:
                say("pipe: not installed (apt-get install mariadb-client postgresql-client)")
        if "pgloader" in wanted:
            exe = shutil.which("pgloader")
            if exe:
                found["pgloader"] = {"exe": exe,
                                     "version": self._version([exe, "--version"], 2)}
            else:
                say("pgloader: not installed (apt-get install pgloader)")
        if "sling" in wanted:
            exe = self._find_sling()
            if exe:
                found["sling"] = {"exe": exe, "version": self._version([exe, "--version"])}
            else:
                say("sling: not installed (uv pip install --target DIR sling-linux-amd64, then"
                    " SLING_BINARY=DIR/sling_linux_amd64/bin/sling-linux-amd64; the `sling`"
                    " package downloads its binary at first run, which fails offline)")
        self.peers = found
        for name, info in found.items():
            say(f"{name}: {info['version']}")

    def _find_sling(self) -> str | None:
        cands = [self.args.sling_binary, os.environ.get("SLING_BINARY"),
                 shutil.which("sling-linux-amd64")]
        for entry in sys.path:
            cands.append(str(Path(entry) / "sling_linux_amd64" / "bin" / "sling-linux-amd64"))
        for c in cands:
            if c and Path(c).is_file() and os.access(c, os.X_OK):
                return str(Path(c).resolve())
        return None

    @staticmethod
    def _version(cmd: list[str], lines: int = 1) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"? ({exc})"
        text = (p.stdout or p.stderr).strip().splitlines()
        return " / ".join(t.strip() for t in text[:lines])

    # -- data

    def mysql_counts(self, db: str) -> dict[str, int] | None:
        try:
            rows = self.mysql.query(
                "SELECT 'annuity_plan', COUNT(*) FROM annuity_plan UNION ALL "
                "SELECT 'portfolio_plan', COUNT(*) FROM portfolio_plan UNION ALL "
                "SELECT 'organization', COUNT(*) FROM organization", db=db)
        except pymysql.err.MySQLError:
            return None
        return {str(t): int(n) for t, n in rows}

    def ensure_data(self, db: str, rows: int, small: int) -> None:
        want = {"annuity_plan": rows, "portfolio_plan": small, "organization": small}
        have = self.mysql_counts(db)
        if self.args.skip_gen and have == want:
            say(f"data: {db} already holds {rows:,} / {small:,} / {small:,} rows (--skip-gen)")
            self.gen[db] = {"skipped": True, "counts": have}
            return
        say(f"data: generating {db}: annuity_plan {rows:,}, portfolio_plan/organization"
            f" {small:,} ...")
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, str(BENCH / "gen_mysql.py"), "--rows", str(rows), "--small-rows",
             str(small), "--url", self.mysql.url(db)],
            capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"gen_mysql.py failed ({p.returncode}):\n{p.stderr[-3000:]}")
        report = json.loads(p.stdout.strip().splitlines()[-1])
        report["wall_s"] = time.perf_counter() - t0
        self.gen[db] = report
        say(f"data: {db} generated in {report['wall_s']:.1f} s")

    def mutate(self) -> dict[str, Any]:
        """bench/mutate_mysql.py: ~1% of each legacy table renamed, updated_at = NOW()."""
        p = subprocess.run([sys.executable, str(BENCH / "mutate_mysql.py"), "--url",
                            self.mysql.url(self.db_main)],
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"mutate_mysql.py failed:\n{p.stderr[-3000:]}")
        self.mutations += 1
        report: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        return report

    def warm_mysql(self, db: str) -> None:
        """Untimed full scan so the first timed run does not pay for a cold page cache."""
        self.mysql.query("SELECT SUM(CHAR_LENGTH(plan_name)), SUM(CHAR_LENGTH(customer_name))"
                         " FROM annuity_plan", db=db)

    # -- PostgreSQL databases

    def recreate_db(self, db: str, ddl: bool = True) -> None:
        with self.pg.connect() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {qi(db)} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {qi(db)}")
        self._oids.pop(db, None)
        if ddl:
            from refsync.demo_data import reference_tables_postgres_ddl

            with self.pg.connect(db) as conn:
                conn.execute(reference_tables_postgres_ddl())
                conn.execute("CREATE SCHEMA IF NOT EXISTS bench")

    def setup_peers_db(self) -> None:
        self.recreate_db(DB_PEERS, ddl=False)
        with self.pg.connect(DB_PEERS) as conn:
            conn.execute("CREATE SCHEMA peer_pipe")
            conn.execute(
                "CREATE TABLE peer_pipe.annuity_plan (plan_code varchar(20) PRIMARY KEY,"
                " plan_name varchar(255), plan_type varchar(50), customer_name varchar(255),"
                " updated_at timestamp)")

    def oid(self, db: str) -> int:
        if db not in self._oids:
            self._oids[db] = int(self.pg_scalar(None, "SELECT oid FROM pg_database"
                                                " WHERE datname = %s", (db,)))
        return self._oids[db]

    def measure(self, cmd: Sequence[str], env: dict[str, str], log: Path,
                db: str | None) -> dict[str, Any]:
        """run_measured, plus the WAL of `db` alone (pg_waldump) when it can be had."""
        attribute = db is not None and self.wal is not None and self.wal.exe is not None
        try:
            if attribute:
                assert self.wal is not None
                self.wal.reserve()
            r = run_measured(cmd, env=env, cwd=self.work, log=log,
                             pg=self.pg if db is not None else None, quiesce_s=self.args.quiesce)
            if attribute:
                assert self.wal is not None and db is not None
                r["wal_db"] = db
                r["wal_db_bytes"] = self.wal.bytes_for(r["lsn0"], r["lsn1"], self.oid(db))
        finally:
            if attribute:
                assert self.wal is not None
                self.wal.release()
        return r

    def pg_exec(self, db: str, *statements: str) -> None:
        with self.pg.connect(db) as conn:
            for s in statements:
                conn.execute(s)

    def pg_scalar(self, db: str | None, sql: str, args: Any = None) -> Any:
        with self.pg.connect(db) as conn:
            row = conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def truncate(self, db: str, tables: Iterable[tuple[str, str, str]]) -> None:
        self.pg_exec(db, *(f"TRUNCATE {ref(s, t)}" for s, t, _ in tables))

    def vacuum(self, db: str, tables: Iterable[tuple[str, str, str]]) -> None:
        """Untimed: as autovacuum would have long done before the next night's run."""
        self.pg_exec(db, *(f"VACUUM (ANALYZE) {ref(s, t)}" for s, t, _ in tables))

    def snapshot_xmin(self, db: str, tables: Sequence[tuple[str, str, str]]) -> None:
        stmts = ["CREATE SCHEMA IF NOT EXISTS bench"]
        for i, (s, t, k) in enumerate(tables):
            stmts += [f"DROP TABLE IF EXISTS bench.xmin_{i}",
                      f"CREATE UNLOGGED TABLE bench.xmin_{i} AS SELECT {qi(k)}::text AS k,"
                      f" xmin::text AS x FROM {ref(s, t)}",
                      f"ANALYZE bench.xmin_{i}"]
        self.pg_exec(db, *stmts)

    def rewritten(self, db: str, tables: Sequence[tuple[str, str, str]],
                  keys_of_first: bool = False) -> tuple[int, int, set[str] | None]:
        """(rows with a new row version or new, rows gone, keys of the first table's)."""
        total = gone = 0
        keys: set[str] | None = None
        with self.pg.connect(db) as conn:
            for i, (s, t, k) in enumerate(tables):
                sel = (f"FROM {ref(s, t)} t LEFT JOIN bench.xmin_{i} b ON b.k = t.{qi(k)}::text"
                       f" WHERE b.k IS NULL OR b.x <> t.xmin::text")
                if i == 0 and keys_of_first:
                    keys = {r[0] for r in conn.execute(f"SELECT t.{qi(k)}::text {sel}")}
                    total += len(keys)
                else:
                    total += conn.execute(f"SELECT count(*) {sel}").fetchone()[0]
                gone += conn.execute(
                    f"SELECT count(*) FROM bench.xmin_{i} b WHERE NOT EXISTS (SELECT 1 FROM"
                    f" {ref(s, t)} t WHERE t.{qi(k)}::text = b.k)").fetchone()[0]
        return total, gone, keys

    def watermark(self, db: str, name: str) -> str | None:
        try:
            return self.pg_scalar(db, "SELECT watermark FROM refsync.sync_state"
                                  " WHERE table_name = %s", (name,))
        except psycopg.Error:
            return None

    # -- configs

    def seed_section(self) -> dict[str, Any]:
        doc = yaml.safe_load((ROOT / "config" / "data_sources.yml").read_text(encoding="utf-8"))
        return dict(doc["reference_sync"])

    def write_config(self, name: str, tables: list[str], incremental: Sequence[str] = ()) -> Path:
        section = self.seed_section()
        by_name = {t["name"]: t for t in section["tables"]}
        picked = []
        for n in tables:
            t = json.loads(json.dumps(by_name[n]))
            sc = t["source_config"]
            if t["source_type"] == "config_file" and not Path(sc["file_path"]).is_absolute():
                sc["file_path"] = str(ROOT / sc["file_path"])
            if n in incremental and "incremental" not in sc:
                sc["incremental"] = {"updated_at_column": "updated_at"}
            picked.append(t)
        section["tables"] = picked
        path = self.work / "configs" / f"{name}.yml"
        path.write_text(yaml.safe_dump({"reference_sync": section}, allow_unicode=True,
                                       sort_keys=False), encoding="utf-8")
        return path

    # -- runners

    def _log(self, scenario: str, runner: str, i: int) -> Path:
        safe = f"{scenario}-{runner}-{i + 1}".replace("/", "_").replace("@", "_")
        return self.work / "logs" / safe

    def record(self, scenario: str, runner: str, i: int, r: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
        r.update(scenario=scenario, runner=runner, i=i, **extra)
        r.setdefault("ok", r["rc"] == 0)
        self.runs.append(r)
        rows = r.get("rows")
        rps = (rows / r["wall_s"]) if rows and r.get("rows_per_s", True) is not False else None
        r["rows_per_s_value"] = rps
        where = "untimed" if scenario == "prime" else f"{i + 1}/{self.nruns(scenario)}"
        bits = [f"[{scenario} {where}] {runner:<24}",
                f"{r['wall_s']:7.2f} s", f"peak {mb(r['peak_rss_bytes']):6.1f} MB",
                f"cpu {r['cpu_user_s'] + r['cpu_sys_s']:5.1f} s",
                f"mysqld {r['mysqld_cpu_s']:4.1f} s", f"pg {r['postgres_cpu_s']:4.1f} s",
                f"other {r['other_cpu_s']:4.1f} s"]
        if r.get("wal_bytes") is not None:
            w = wal_of(r)
            bits.append(f"WAL {mb(w):7.1f} MB" + (
                f" (cluster {mb(r['wal_bytes']):.1f})" if w != r["wal_bytes"] else ""))
        if rps:
            bits.append(f"{rps:,.0f} rows/s")
        if r.get("rows_rewritten") is not None:
            bits.append(f"rewritten {r['rows_rewritten']:,}")
        if r.get("summary"):
            bits.append(r["summary"])
        if not r["ok"]:
            bits.append(f"FAILED rc={r['rc']}: {r.get('error') or tail(r['stderr_file'], 3)}")
        say("  ".join(bits))
        self.save()
        return r

    def nruns(self, scenario: str) -> int:
        return max(self.repeat, 5) if scenario == "startup" else self.repeat

    def run_refsync(self, scenario: str, runner: str, i: int, config: Path, pg_db: str,
                    mysql_db: str, extra: Sequence[str] = (), record: bool = True,
                    **fields: Any) -> dict[str, Any]:
        cmd = [self.refsync, "sync", "-c", str(config), "--json", *extra]
        version = code_version()
        if self.args.refsync_verbose:
            cmd += ["-v", "--log-format", "json"]
        r = self.measure(cmd, self.refsync_env(pg_db, mysql_db), self._log(scenario, runner, i),
                         pg_db)
        doc = None
        for line in reversed(Path(r["stdout_file"]).read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                break
        tables = (doc or {}).get("tables") or []
        r["refsync"] = doc
        r["code_version"] = version
        r["rows"] = sum(int(t.get("read") or 0) for t in tables)
        r["timings"] = {t["name"]: t["timings"] for t in tables if t.get("timings")}
        bad = [f"{t['name']}: {t.get('status')} {t.get('error') or ''}".strip()
               for t in tables if t.get("status") not in ("ok", "unchanged")]
        r["ok"] = r["rc"] == 0 and doc is not None and not bad
        if bad or doc is None or r["rc"] != 0:
            r["error"] = "; ".join(bad) or (f"rc={r['rc']} " if r["rc"] else "") + (
                "" if doc is None else str(doc.get("error") or "")) + " " + tail(
                    r["stderr_file"], 3)
        counts = {k: sum(int(t.get(k) or 0) for t in tables)
                  for k in ("read", "inserted", "updated", "unchanged", "deleted", "rejected")}
        r["counts"] = counts
        r["summary"] = " ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        r.update(fields)
        if record:
            return self.record(scenario, runner, i, r)
        return r

    def prime(self, what: str, config: Path, pg_db: str, mysql_db: str,
              extra: Sequence[str] = ()) -> None:
        """An untimed refsync run that puts a target (and its watermarks) in place."""
        say(f"  (untimed: {what})")
        r = self.run_refsync("prime", what, 0, config, pg_db, mysql_db, extra, record=False)
        if not r["ok"]:
            raise SystemExit(f"priming run failed ({what}): {r.get('error')}\n"
                             f"{tail(r['stderr_file'], 20)}")
        self.notes.append(f"untimed priming run '{what}': {r['wall_s']:.1f} s, {r['summary']}")

    def pipe_sql(self) -> str:
        def esc(c: str) -> str:
            return (f"IFNULL(REPLACE(REPLACE(REPLACE(REPLACE(`{c}`,'\\\\','\\\\\\\\'),"
                    f"'\\t','\\\\t'),'\\n','\\\\n'),'\\r','\\\\r'),'\\\\N')")
        return f"SELECT {', '.join(esc(c) for c in ANNUITY_COLS)} FROM `annuity_plan`"

    def run_peer(self, peer: str, scenario: str, i: int, mode: str = "full") -> dict[str, Any]:
        env = self.base_env()
        log = self._log(scenario, peer, i)
        check_table: str | None = None
        if peer == "pipe":
            info = self.peers["pipe"]
            if self.mysql.password:
                env["MYSQL_PWD"] = self.mysql.password
            script = ('"$0" -h "$1" -P "$2" -u "$3" --quick --batch --raw --skip-column-names'
                      ' --default-character-set=utf8mb4 -e "$4" "$5"'
                      ' | "$6" "$7" -X -q -1 -v ON_ERROR_STOP=1 -c "$8" -c "$9"')
            cmd = ["bash", "-o", "pipefail", "-c", script, info["mysql"], self.mysql.host,
                   str(self.mysql.port), self.mysql.user, self.pipe_sql(), self.db_main,
                   info["psql"], self.pg.url(DB_PEERS), "TRUNCATE peer_pipe.annuity_plan",
                   "\\copy peer_pipe.annuity_plan FROM pstdin"]
            check_table = "peer_pipe.annuity_plan"
        elif peer == "pgloader":
            load = self.work / "configs" / "pgloader.load"
            load.write_text(
                "LOAD DATABASE\n"
                f"  FROM {self.mysql.url(self.db_main, 'mysql')}\n"
                f"  INTO {self.pg.url(DB_PEERS)}\n"
                "  INCLUDING ONLY TABLE NAMES MATCHING 'annuity_plan'\n"
                f"  ALTER SCHEMA '{self.db_main}' RENAME TO 'pgloader';\n", encoding="utf-8")
            cmd = [self.peers["pgloader"]["exe"], str(load)]
            check_table = "pgloader.annuity_plan"
        elif peer == "sling":
            env.update(SLING_DISABLE_TELEMETRY="true",
                       SLING_HOME_DIR=str(self.work / "sling-home"),
                       BENCH_MYSQL=self.mysql.url(self.db_main, "mysql"),
                       BENCH_PG=self.pg.url(DB_PEERS, sslmode=True))
            cmd = [self.peers["sling"]["exe"], "run", "--src-conn", "BENCH_MYSQL",
                   "--src-stream", f"{self.db_main}.annuity_plan", "--tgt-conn", "BENCH_PG"]
            if mode == "full":
                cmd += ["--tgt-object", "peer_sling.annuity_plan", "--mode", "full-refresh"]
                check_table = "peer_sling.annuity_plan"
            else:
                cmd += ["--tgt-object", "peer_sling_incr.annuity_plan", "--mode", "incremental",
                        "--primary-key", "plan_code", "--update-key", "updated_at"]
        else:
            raise ValueError(peer)
        r = self.measure(cmd, env, log, DB_PEERS)
        r["ok"] = r["rc"] == 0
        if check_table and r["ok"]:
            try:
                n = self.pg_scalar(DB_PEERS, f"SELECT count(*) FROM {check_table}")
            except psycopg.Error as exc:
                n, r["error"] = None, f"no target table: {exc}"
            r["rows"] = n
            if n != self.rows:
                r["ok"] = False
                r["error"] = r.get("error") or f"target holds {n} rows, expected {self.rows}"
        if mode != "full":
            r["rows_per_s"] = False
        if peer == "sling" and mode != "full":
            r["summary"] = _ANSI.sub("", tail(r["stderr_file"], 2)).replace("\n", " | ")[-150:]
        return self.record(scenario, peer, i, r)

    # -- scenarios

    def ensure_loaded(self, cfg: Path) -> None:
        n = self.pg_scalar(DB_TARGET, f"SELECT count(*) FROM {ref(*ANNUITY[:2])}")
        if n != self.rows:
            self.truncate(DB_TARGET, [ANNUITY])
            self.prime("first load of annuity_plan", cfg, DB_TARGET, self.db_main)

    def s_full(self, cfg: Path) -> None:
        say(f"\n== full: first load of annuity_plan ({self.rows:,} rows) into an empty"
            f" {ANNUITY[0]}.{ANNUITY[1]}, interleaved with the peers")
        for i in range(self.repeat):
            self.truncate(DB_TARGET, [ANNUITY])
            self.run_refsync("full", "refsync", i, cfg, DB_TARGET, self.db_main)
            for peer in ("pipe", "pgloader", "sling"):
                if peer in self.peers:
                    self.run_peer(peer, "full", i)
        self.verify_full()

    def s_nochange(self, cfg: Path) -> None:
        say("\n== nochange: --full re-sync, nothing changed (pipe interleaved)")
        self.ensure_loaded(cfg)
        for i in range(self.repeat):
            self.vacuum(DB_TARGET, [ANNUITY])
            self.snapshot_xmin(DB_TARGET, [ANNUITY])
            r = self.run_refsync("nochange", "refsync", i, cfg, DB_TARGET, self.db_main,
                                 ["--full"], record=False)
            r["rows_rewritten"], r["rows_gone"], _ = self.rewritten(DB_TARGET, [ANNUITY])
            self.record("nochange", "refsync", i, r)
            if "pipe" in self.peers:
                self.run_peer("pipe", "nochange", i)

    def mutated_keys(self, report: dict[str, Any]) -> set[str]:
        rows = self.mysql.query("SELECT plan_code FROM annuity_plan WHERE updated_at >="
                                " CAST(%s AS DATETIME(6)) - INTERVAL 1 SECOND",
                                (str(report["now"]).replace("T", " "),), db=self.db_main)
        return {r[0] for r in rows}

    def s_1pct_full(self, cfg: Path) -> None:
        say("\n== 1pct-full: bench/mutate_mysql.py (~1 %), then --full re-sync")
        self.ensure_loaded(cfg)
        for i in range(self.repeat):
            m = self.mutate()
            changed = self.mutated_keys(m)
            self.vacuum(DB_TARGET, [ANNUITY])
            self.snapshot_xmin(DB_TARGET, [ANNUITY])
            r = self.run_refsync("1pct-full", "refsync", i, cfg, DB_TARGET, self.db_main,
                                 ["--full"], record=False)
            n, gone, keys = self.rewritten(DB_TARGET, [ANNUITY], keys_of_first=True)
            assert keys is not None
            r.update(rows_rewritten=n, rows_gone=gone, changed=len(changed),
                     mutate_reported=m["tables"]["annuity_plan"]["updated"],
                     exact=keys == changed, extra_rewritten=len(keys - changed),
                     missed=len(changed - keys))
            r["summary"] += (f" | changed {len(changed):,}, exactly those rewritten:"
                             f" {'yes' if r['exact'] else 'NO'}")
            self.record("1pct-full", "refsync", i, r)
        self.verify_target_vs_mysql("after 1pct-full")

    def s_1pct_incr(self, cfg_incr: Path) -> None:
        say("\n== 1pct-incr: incremental config (updated_at), mutate ~1 %, incremental run")
        if self.watermark(DB_TARGET, ANNUITY[1]) is None:
            self.prime("incremental first run (sets the watermark)", cfg_incr, DB_TARGET,
                       self.db_main)
        for i in range(self.repeat):
            m = self.mutate()
            changed = self.mutated_keys(m)
            mark = self.watermark(DB_TARGET, ANNUITY[1])
            window = None
            if mark:
                window = int(self.mysql.query(
                    "SELECT COUNT(*) FROM annuity_plan WHERE updated_at >= %s",
                    (mark.replace("T", " "),), db=self.db_main)[0][0])
            self.vacuum(DB_TARGET, [ANNUITY])
            self.snapshot_xmin(DB_TARGET, [ANNUITY])
            r = self.run_refsync("1pct-incr", "refsync", i, cfg_incr, DB_TARGET, self.db_main,
                                 record=False)
            n, gone, keys = self.rewritten(DB_TARGET, [ANNUITY], keys_of_first=True)
            assert keys is not None
            r.update(rows_rewritten=n, rows_gone=gone, changed=len(changed),
                     watermark_before=mark, window_rows=window, exact=keys == changed,
                     rows_per_s=False)
            r["summary"] += (f" | changed {len(changed):,}, rows in the >= watermark window"
                             f" {window if window is not None else '?'}, exactly those"
                             f" rewritten: {'yes' if r['exact'] else 'NO'}")
            self.record("1pct-incr", "refsync", i, r)

    def s_incr_nochange(self) -> None:
        say("\n== incr-nochange-4tables: the seed's four tables, the three legacy ones"
            " incremental, nothing new (Sling's one-table incremental no-change interleaved)")
        cfg = self.write_config("four-incremental", list(TARGETS),
                                incremental=["年金计划", "组合计划", "组织架构"])
        tables = list(TARGETS.values())
        self.prime("first run of the four tables", cfg, DB_TARGET_4T, self.db_main)
        self.vacuum(DB_TARGET_4T, tables)
        if "sling" in self.peers:
            say("  (untimed: Sling incremental first load)")
            self.run_peer("sling", "prime", 0, mode="incremental")
            self.runs.pop()
        for i in range(self.repeat):
            self.snapshot_xmin(DB_TARGET_4T, tables)
            r = self.run_refsync("incr-nochange-4tables", "refsync", i, cfg, DB_TARGET_4T,
                                 self.db_main, record=False)
            r["rows_rewritten"], r["rows_gone"], _ = self.rewritten(DB_TARGET_4T, tables)
            r["rows_per_s"] = False
            self.record("incr-nochange-4tables", "refsync", i, r)
            if "sling" in self.peers:
                self.run_peer("sling", "incr-nochange-4tables", i, mode="incremental")

    def s_startup(self) -> None:
        say("\n== startup: refsync --help")
        env = self.refsync_env(DB_TARGET, self.db_main)
        subprocess.run([self.refsync, "--help"], env=env, capture_output=True)  # warm-up
        for i in range(self.nruns("startup")):
            r = self.measure([self.refsync, "--help"], env, self._log("startup", "refsync", i),
                             None)
            self.record("startup", "refsync --help", i, r)

    def s_memory(self, cfg: Path) -> None:
        say(f"\n== memory-scaling: first load at rows/10 ({self.rows // 10:,}) vs rows"
            f" ({self.rows:,})")
        self.recreate_db(DB_TARGET_SMALL)
        for i in range(self.repeat):
            self.truncate(DB_TARGET_SMALL, [ANNUITY])
            self.run_refsync("memory-scaling", f"refsync@{self.rows // 10}", i, cfg,
                             DB_TARGET_SMALL, self.db_small)
        if not self._runs("full", "refsync"):
            for i in range(self.repeat):
                self.truncate(DB_TARGET, [ANNUITY])
                self.run_refsync("memory-scaling", f"refsync@{self.rows}", i, cfg, DB_TARGET,
                                 self.db_main)

    def s_seed10k(self) -> None:
        say("\n== seed-4tables-10k: the seed's config, four tables, 10,000 rows each,"
            " first run into empty tables")
        cfg = self.write_config("seed-four", list(TARGETS))
        tables = list(TARGETS.values())
        for i in range(self.repeat):
            self.truncate(DB_TARGET_10K, tables)
            self.pg_exec(DB_TARGET_10K, "DROP SCHEMA IF EXISTS refsync CASCADE")
            self.run_refsync("seed-4tables-10k", "refsync", i, cfg, DB_TARGET_10K, self.db_10k)

    # -- data checks

    def fingerprint_pg(self, db: str, table: str, cols: Sequence[str]) -> dict[str, Any]:
        parts = ["count(*)"]
        for c in cols:
            parts += [f"count({qi(c)})", f"coalesce(sum(length({qi(c)})), 0)",
                      f"count(*) FILTER (WHERE length({qi(c)}) = 0)"]
        joined = " || ',' || ".join(f"quote_nullable({qi(c)})" for c in cols)
        parts.append(f"coalesce(sum(hashtext({joined})::bigint), 0)")
        row = self.pg_scalar_row(db, f"SELECT {', '.join(parts)} FROM {table}")
        return {"stats": [int(x) for x in row[:-1]], "hash": int(row[-1])}

    def pg_scalar_row(self, db: str, sql: str) -> tuple[Any, ...]:
        with self.pg.connect(db) as conn:
            return tuple(conn.execute(sql).fetchone())

    def fingerprint_mysql(self, db: str) -> list[int]:
        parts = ["COUNT(*)"]
        for c in ANNUITY_COLS[:4]:
            parts += [f"COUNT(`{c}`)", f"COALESCE(SUM(CHAR_LENGTH(`{c}`)), 0)",
                      f"SUM(CHAR_LENGTH(`{c}`) = 0)"]
        row = self.mysql.query(f"SELECT {', '.join(parts)} FROM annuity_plan", db=db)[0]
        return [int(x or 0) for x in row]

    def verify_full(self) -> None:
        try:
            src = self.fingerprint_mysql(self.db_main)
            tables = {"refsync": (DB_TARGET, ref(*ANNUITY[:2]), ANNUITY_TARGET_COLS)}
            for peer, table in (("pipe", "peer_pipe.annuity_plan"),
                                ("pgloader", "pgloader.annuity_plan"),
                                ("sling", "peer_sling.annuity_plan")):
                if peer in self.peers:
                    tables[peer] = (DB_PEERS, table, ANNUITY_COLS[:4])
            fps = {}
            for name, (db, table, cols) in tables.items():
                try:
                    fps[name] = self.fingerprint_pg(db, table, cols)
                except psycopg.Error as exc:
                    fps[name] = {"error": str(exc).strip()}
            ref_hash = fps.get("pipe", {}).get("hash")
            result = {}
            for name, fp in fps.items():
                if "error" in fp:
                    result[name] = "n/a (" + fp["error"][:80] + ")"
                    continue
                same_stats = fp["stats"] == src
                same_hash = ref_hash is None or fp["hash"] == ref_hash
                result[name] = "identical" if same_stats and same_hash else (
                    "DIFFERS (" + ", ".join(x for x, ok in (("counts/lengths vs MariaDB",
                                                             same_stats),
                                                            ("row hash vs pipe", same_hash))
                                            if not ok) + ")")
            self.checks["after full"] = {"mysql": src, "fingerprints": fps, "result": result}
            say("  data check (count, NULLs, '' and lengths per column vs MariaDB;"
                " row hash vs the pipe): "
                + ", ".join(f"{k} {v}" for k, v in result.items()))
        except (psycopg.Error, pymysql.err.MySQLError) as exc:
            say(f"  data check failed to run: {exc}")

    def verify_target_vs_mysql(self, label: str) -> None:
        try:
            src = self.fingerprint_mysql(self.db_main)
            fp = self.fingerprint_pg(DB_TARGET, ref(*ANNUITY[:2]), ANNUITY_TARGET_COLS)
            res = "identical" if fp["stats"] == src else "DIFFERS"
            self.checks[label] = {"mysql": src, "refsync": fp, "result": res}
            say(f"  data check {label}: refsync target vs MariaDB {res}")
        except (psycopg.Error, pymysql.err.MySQLError) as exc:
            say(f"  data check failed to run: {exc}")

    # -- run everything

    def take_lock(self) -> psycopg.Connection[Any]:
        """Two benchmarks on one server would drop each other's databases and share the CPU:
        hold an advisory lock for the whole run (released when this process ends)."""
        conn = self.pg.connect()
        conn.execute("SET application_name = 'refsync-bench'")
        waited = False
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (BENCH_LOCK,)).fetchone()[0]:
            holder = conn.execute(
                "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN"
                " pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
                " AND l.objid = %s", (BENCH_LOCK & 0xFFFFFFFF,)).fetchone()
            who = (f"backend pid {holder[0]} from {holder[1]}, since {holder[2]:%H:%M:%S}"
                   if holder else "holder unknown")
            msg = f"another bench/run.py is running against {self.pg.url('')} ({who})"
            if not self.args.wait_lock:
                conn.close()
                raise SystemExit(msg + "; try again when it is done, or pass --wait-lock")
            if not waited:
                say(msg + "; waiting (--wait-lock)")
                waited = True
            time.sleep(5)
        return conn

    def run(self) -> None:
        a = self.args
        self._lock = self.take_lock()
        say(f"refsync benchmark {self.started.isoformat(timespec='seconds')}: rows {self.rows:,},"
            f" repeat {self.repeat}, scenarios {','.join(self.scenarios)}")
        say(f"MariaDB {self.mysql.host}:{self.mysql.port} db {self.db_main} (user"
            f" {self.mysql.user}); PostgreSQL {self.pg.url('')}; refsync {self.refsync}")
        say(f"results: {self.out} (logs and configs: {self.work})")
        self.machine = machine_info(self)
        say("machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()))
        self.detect_peers()
        self.wal = WalAttributor(self.pg)
        say("WAL: " + ("records of the run's own database, from pg_waldump (cluster-wide"
                       " figures in the JSON)" if self.wal.exe else
                       f"cluster-wide pg_current_wal_lsn() difference ({self.wal.why})"))
        s = set(self.scenarios)
        big = s & {"full", "nochange", "1pct-full", "1pct-incr", "incr-nochange-4tables",
                   "memory-scaling"}
        if big:
            self.ensure_data(self.db_main, self.rows, self.small_rows)
        if "memory-scaling" in s:
            self.ensure_data(self.db_small, self.rows // 10, max(1000, self.rows // 100))
        if "seed-4tables-10k" in s:
            self.ensure_data(self.db_10k, 10_000, 10_000)
        for db in (DB_TARGET, DB_TARGET_4T, DB_TARGET_10K):
            self.recreate_db(db)
        if self.peers:
            self.setup_peers_db()
        cfg_full = self.write_config("annuity-full", ["年金计划"])
        cfg_incr = self.write_config("annuity-incremental", ["年金计划"],
                                     incremental=["年金计划"])
        if big:
            self.warm_mysql(self.db_main)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("startup", self.s_startup),
            ("full", lambda: self.s_full(cfg_full)),
            ("nochange", lambda: self.s_nochange(cfg_full)),
            ("1pct-full", lambda: self.s_1pct_full(cfg_full)),
            ("1pct-incr", lambda: self.s_1pct_incr(cfg_incr)),
            ("incr-nochange-4tables", self.s_incr_nochange),
            ("memory-scaling", lambda: self.s_memory(cfg_full)),
            ("seed-4tables-10k", self.s_seed10k),
        ]
        for name, fn in steps:
            if name in s:
                t0 = time.perf_counter()
                fn()
                self.notes.append(f"scenario {name}: {time.perf_counter() - t0:.0f} s in all")
        self.report()
        if a.cleanup:
            with self.pg.connect() as admin:
                for db in (DB_TARGET, DB_TARGET_4T, DB_TARGET_SMALL, DB_TARGET_10K, DB_PEERS):
                    admin.execute(f"DROP DATABASE IF EXISTS {qi(db)} WITH (FORCE)")

    # -- reporting

    def _runs(self, scenario: str, runner: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["scenario"] == scenario and r["runner"] == runner]

    def pairs(self, sa: str, ra: str, sb: str, rb: str) -> dict[str, Any] | None:
        a = {r["i"]: r for r in self._runs(sa, ra) if r["ok"]}
        b = {r["i"]: r for r in self._runs(sb, rb) if r["ok"]}
        idx = sorted(set(a) & set(b))
        if not idx:
            return None
        ratios = [a[i]["wall_s"] / b[i]["wall_s"] for i in idx]
        return {"a": f"{sa}/{ra}", "b": f"{sb}/{rb}", "n": len(idx), "ratios": ratios,
                "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                "a_median_s": statistics.median(a[i]["wall_s"] for i in idx),
                "b_median_s": statistics.median(b[i]["wall_s"] for i in idx)}

    def report(self) -> None:
        pair_specs = [
            ("refsync/pgloader (full)", "full", "refsync", "full", "pgloader"),
            ("refsync/sling (full)", "full", "refsync", "full", "sling"),
            ("refsync/pipe (full)", "full", "refsync", "full", "pipe"),
            ("refsync-nochange/pipe", "nochange", "refsync", "nochange", "pipe"),
            ("refsync-incr-nochange-4tables/sling-incr-nochange-1table",
             "incr-nochange-4tables", "refsync", "incr-nochange-4tables", "sling"),
        ]
        self.pair_results: dict[str, Any] = {}
        say("\n## Paired ratios (A B A B ..., ratio taken pair by pair, then the median)\n")
        say("| pair | pairs | A median s | B median s | A/B per pair | A/B median (min–max) |")
        say("|---|---|---|---|---|---|")
        for label, sa, ra, sb, rb in pair_specs:
            p = self.pairs(sa, ra, sb, rb)
            self.pair_results[label] = p
            if p is None:
                miss = rb if not self._runs(sb, rb) else "failed runs"
                say(f"| {label} | 0 | | | n/a ({miss}) | |")
                continue
            say(f"| {label} | {p['n']} | {p['a_median_s']:.2f} | {p['b_median_s']:.2f} |"
                f" {', '.join(f'{x:.2f}' for x in p['ratios'])} |"
                f" **{p['median']:.2f}** ({p['min']:.2f}–{p['max']:.2f}) |")
        self.goals = self.compute_goals()
        say("\n## Goals (issue 4)\n")
        say("| # | goal | measured | status |")
        say("|---|---|---|---|")
        for g in self.goals:
            say(f"| {g['id']} | {g['goal']} | {g['measured']} | {g['status']} |")
        say("\n## Runs\n")
        say("| scenario | runs | median wall s (min–max) | rows/s | peak RSS MB | WAL MB |"
            " rows rewritten | status |")
        say("|---|---|---|---|---|---|---|---|")
        seen: list[tuple[str, str]] = []
        for r in self.runs:
            key = (r["scenario"], r["runner"])
            if key not in seen:
                seen.append(key)
        self.table: list[dict[str, Any]] = []
        for scen, runner in seen:
            every = self._runs(scen, runner)
            rs = [r for r in every if r["ok"]] or every  # figures of the runs that succeeded
            walls = [r["wall_s"] for r in rs]
            rps = median(r.get("rows_per_s_value") for r in rs)
            rss = median(mb(r["peak_rss_bytes"]) for r in rs)
            wal = median(mb(wal_of(r)) for r in rs if wal_of(r) is not None)
            rew = [r["rows_rewritten"] for r in rs if r.get("rows_rewritten") is not None]
            rew_s = "" if not rew else (
                str(rew[0]) if len(set(rew)) == 1 else ", ".join(str(x) for x in rew))
            if scen in ("1pct-full", "1pct-incr") and rew:
                exact = all(r.get("exact") for r in rs)
                changed = ", ".join(str(r.get("changed")) for r in rs)
                rew_s += (f" (changed {changed};"
                          f" {'exactly those' if exact else 'NOT exactly those'})")
            nok = sum(1 for r in every if r["ok"])
            status = "ok" if nok == len(every) else (
                f"FAILED {len(every) - nok}/{len(every)}"
                + (" (figures: the runs that succeeded)" if nok else ""))
            row = {"scenario": scen, "runner": runner, "runs": len(every),
                   "median_wall_s": median(walls), "min_wall_s": min(walls),
                   "max_wall_s": max(walls), "rows_per_s": rps, "peak_rss_mb": rss,
                   "wal_mb": wal, "rows_rewritten": rew, "status": status}
            self.table.append(row)
            name = scen if runner == "refsync" else f"{scen} / {runner}"
            say(f"| {name} | {len(every)} | {median(walls):.2f} ({min(walls):.2f}–{max(walls):.2f})"
                f" | {'' if rps is None else f'{rps:,.0f}'} | {fmt(rss, 0)} | {fmt(wal, 1, '')} |"
                f" {rew_s} | {status} |")
        say("\nWAL MB: " + ("records touching the run's own database (pg_waldump); cluster-wide"
                             " figures are in the JSON" if self.wal and self.wal.exe else
                             "cluster-wide LSN difference") + ". The rest of the machine"
            " used, per run (median CPU s, from /proc, the run's client and servers excluded): "
            + ", ".join(f"{s}/{r} {median(x['other_cpu_s'] for x in self._runs(s, r)):.1f}"
                        for s, r in seen))
        if self.checks:
            say("\nData checks: " + "; ".join(
                f"{k}: " + (", ".join(f"{n} {v}" for n, v in c["result"].items())
                            if isinstance(c["result"], dict) else c["result"])
                for k, c in self.checks.items()))
        timings = {}
        for r in self.runs:
            if r.get("timings") and r["runner"] == "refsync":
                timings.setdefault(r["scenario"], r["timings"])
        if timings:
            say("\nrefsync's own phase timings (first run of each scenario, s): "
                + "; ".join(f"{s}: {json.dumps(t, ensure_ascii=False)}"
                            for s, t in timings.items()))
        versions = sorted({r["code_version"] for r in self.runs if r.get("code_version")})
        if len(versions) > 1:
            say(f"\nWARNING: refsync's source (src/) changed during the benchmark:"
                f" {len(versions)} versions ({', '.join(versions)}; each run's is in the JSON)."
                " Runs of different versions are not comparable.")
        for n in self.notes:
            say(f"note: {n}")
        say(f"\nraw figures: {self.out}")
        self.save()

    def compute_goals(self) -> list[dict[str, Any]]:
        goals: list[dict[str, Any]] = []

        def add(gid: str, goal: str, value: float | None, limit: float | None, measured: str,
                ok: bool | None = None, why: str = "") -> None:
            if ok is None and value is not None and limit is not None:
                ok = value <= limit
            status = ("met" if ok else "NOT met") if ok is not None else (why or "n/a")
            goals.append({"id": gid, "goal": goal, "value": value, "limit": limit,
                          "measured": measured, "status": status})

        def ratio_goal(gid: str, goal: str, label: str, limit: float) -> None:
            p = self.pair_results.get(label)
            if p is None:
                add(gid, goal, None, limit, "not measured", why="n/a (peer not run)")
            else:
                add(gid, goal, p["median"], limit,
                    f"{p['median']:.2f}× (pairs {', '.join(f'{x:.2f}' for x in p['ratios'])};"
                    f" {p['a_median_s']:.2f} s vs {p['b_median_s']:.2f} s)")

        ratio_goal("1a", "full load ≤ 0.6 × pgloader", "refsync/pgloader (full)", 0.6)
        ratio_goal("1b", "full load ≤ 0.6 × Sling", "refsync/sling (full)", 0.6)
        ratio_goal("1c", "full load ≤ 1.3 × raw pipe", "refsync/pipe (full)", 1.3)
        full = [r for r in self._runs("full", "refsync") if r["ok"]]
        noch = [r for r in self._runs("nochange", "refsync") if r["ok"]]
        if noch:
            rew = [r["rows_rewritten"] for r in noch]
            add("2a", "nochange: zero row versions written", max(rew), 0,
                f"rows rewritten {', '.join(map(str, rew))}", ok=max(rew) == 0)
            wal_n = median(wal_of(r) for r in noch)
            wal_f = median(wal_of(r) for r in full)
            if wal_n is not None and wal_f:
                add("2b", "nochange: WAL ≤ 5 % of the first load's", wal_n / wal_f, 0.05,
                    f"{mb(wal_n):.1f} MB vs {mb(wal_f):.1f} MB = {100 * wal_n / wal_f:.1f} %")
            else:
                add("2b", "nochange: WAL ≤ 5 % of the first load's", None, 0.05,
                    f"WAL {fmt(mb(wal_n), 1)} MB (no full run to compare)",
                    why="n/a (run full too)")
        ratio_goal("2c", "nochange: wall ≤ 1.2 × raw pipe", "refsync-nochange/pipe", 1.2)
        p1 = [r for r in self._runs("1pct-full", "refsync") if r["ok"]]
        if p1:
            add("3a", "1 % changed, --full: exactly those rows rewritten", None, None,
                "; ".join(f"changed {r['changed']}, rewritten {r['rows_rewritten']}"
                          f" (+{r['extra_rewritten']} other, {r['missed']} missed)"
                          for r in p1), ok=all(r["exact"] for r in p1))
        pi = [r for r in self._runs("1pct-incr", "refsync") if r["ok"]]
        if pi:
            add("3b", "1 % changed, incremental: only they are read", None, None,
                "; ".join(f"read {r['counts']['read']} of {r['changed']} changed"
                          f" (rows in the ≥ watermark window: {r['window_rows']}),"
                          f" rewritten {r['rows_rewritten']}" for r in pi),
                ok=all(r["counts"]["read"] == r["changed"] and r["exact"] for r in pi))
        inc = [r for r in self._runs("incr-nochange-4tables", "refsync") if r["ok"]]
        if inc:
            p = self.pair_results.get(
                "refsync-incr-nochange-4tables/sling-incr-nochange-1table")
            w = median(r["wall_s"] for r in inc)
            reads = ", ".join(str(r["counts"]["read"]) for r in inc)
            if p is not None:
                add("4", "incremental no-change, four tables ≤ 2 × Sling no-change (1 table)",
                    p["median"], 2.0, f"{w:.2f} s = {p['median']:.2f}× Sling's"
                    f" {p['b_median_s']:.2f} s (pairs"
                    f" {', '.join(f'{x:.2f}' for x in p['ratios'])}); rows read {reads}")
            else:
                add("4", "incremental no-change, four tables ≤ 2 × Sling no-change (1 table)",
                    w / SLING_NOCHANGE_REFERENCE_S, 2.0,
                    f"{w:.2f} s = {w / SLING_NOCHANGE_REFERENCE_S:.2f}× the issue's 0.50 s"
                    f" (Sling not run here: not a same-run ratio); rows read {reads}")
        st = self._runs("startup", "refsync --help")
        if st:
            w = median(r["wall_s"] for r in st)
            add("4s", "`refsync --help` start-up (reported)", w, None, f"{w:.3f} s median",
                why="info")
        small = [r for r in self.runs if r["scenario"] == "memory-scaling"
                 and r["runner"].startswith("refsync@") and r["runner"] != f"refsync@{self.rows}"
                 and r["ok"]]
        large = full or [r for r in self._runs("memory-scaling", f"refsync@{self.rows}")
                         if r["ok"]]
        if large:
            peak = median(mb(r["peak_rss_bytes"]) for r in large)
            assert peak is not None
            add("5a", "peak RSS ≤ 150 MB at 1,000,000 rows", peak, 150,
                f"{peak:.0f} MB at {self.rows:,} rows"
                + ("" if self.rows == 1_000_000 else " (goal is stated for 1,000,000)"))
            if small:
                ps = median(mb(r["peak_rss_bytes"]) for r in small)
                assert ps is not None
                add("5b", "peak RSS at rows ≤ 1.3 × at rows/10", peak / ps, 1.3,
                    f"{peak:.0f} MB / {ps:.0f} MB = {peak / ps:.2f}×")
        seed = [r for r in self._runs("seed-4tables-10k", "refsync")]
        if seed:
            w = median(r["wall_s"] for r in seed)
            assert w is not None
            add("6", "seed's four tables at 10,000 rows: well under 5 s", w, 5.0,
                f"{w:.2f} s median ({', '.join(f'{x:.2f}' for x in (r['wall_s'] for r in seed))})",
                ok=(w < 5.0 and all(r["ok"] for r in seed)))
        return goals

    def save(self) -> None:
        doc = {
            "started": self.started.isoformat(timespec="seconds"),
            "args": {k: v for k, v in vars(self.args).items()},
            "rows": self.rows, "repeat": self.repeat, "scenarios": self.scenarios,
            "machine": getattr(self, "machine", {}), "peers": self.peers,
            "generation": self.gen, "runs": self.runs, "checks": self.checks,
            "pairs": getattr(self, "pair_results", {}), "goals": getattr(self, "goals", []),
            "table": getattr(self, "table", []), "notes": self.notes,
        }
        doc["args"]["mysql_url"] = self.mysql.url(self.db_main).replace(
            quote(self.mysql.password, safe="") or "\0", "***")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str),
                       encoding="utf-8")
        tmp.replace(self.out)


def machine_info(b: Bench) -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(),
                            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    try:
        info["mariadb"] = b.mysql.query("SELECT VERSION()", db="")[0][0]
    except pymysql.err.MySQLError as exc:
        raise SystemExit(
            f"MariaDB/MySQL not reachable at {b.mysql.host}:{b.mysql.port}: {exc}") from None
    try:
        with b.pg.connect() as c:
            info["postgres"] = c.execute("SHOW server_version").fetchone()[0]
            info["shared_buffers"] = c.execute("SHOW shared_buffers").fetchone()[0]
    except psycopg.Error as exc:
        raise SystemExit(f"PostgreSQL not reachable at {b.pg.admin_url}: {exc}") from None
    info["python"] = sys.version.split()[0]
    return info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Scenarios: " + ", ".join(SCENARIOS))
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="annuity_plan rows (default 1,000,000); portfolio_plan and organization"
                   " get rows/10")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per scenario (medians)")
    p.add_argument("--mysql-url", default=os.environ.get(
        "REFSYNC_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/refsync_bench"),
                   help="the legacy database to generate into (also <db>_small and <db>_10k)")
    p.add_argument("--pg-url", default=os.environ.get(
        "REFSYNC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin URL: the benchmark drops and creates refsync_bench_* databases")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma list (default: all)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="comma list of peers to run when installed (default: pipe,pgloader,sling;"
                   " 'none' for none)")
    p.add_argument("--skip-gen", action="store_true",
                   help="do not regenerate the legacy tables when they already hold the rows")
    p.add_argument("--out", help="JSON file for every raw figure"
                   " (default bench/out/results-<timestamp>.json)")
    p.add_argument("--refsync", default=str(ROOT / ".venv" / "bin" / "refsync"),
                   help="the refsync executable (default .venv/bin/refsync)")
    p.add_argument("--sling-binary", help="the Sling binary (default: $SLING_BINARY, or"
                   " sling_linux_amd64/bin/sling-linux-amd64 in this Python's path)")
    p.add_argument("--quiesce", type=float, default=10.0, metavar="SECONDS",
                   help="before each timed run wait up to this long for the machine's CPU to"
                   " fall below 25 %% busy (default 10; 0 = never wait)")
    p.add_argument("--refsync-verbose", action="store_true",
                   help="run refsync with -v --log-format json (its stderr is kept in the logs)")
    p.add_argument("--wait-lock", action="store_true",
                   help="when another benchmark runs against the same PostgreSQL, wait for it"
                   " (default: refuse to start)")
    p.add_argument("--cleanup", action="store_true",
                   help="drop the refsync_bench_* PostgreSQL databases at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; choose from"
                         f" {', '.join(SCENARIOS)}")
    args.peers = [] if args.peers.strip() == "none" else [
        s.strip() for s in args.peers.split(",") if s.strip()]
    if args.rows < 1000 or args.repeat < 1:
        raise SystemExit("--rows must be at least 1000 and --repeat at least 1")
    if not Path(args.refsync).exists():
        raise SystemExit(f"refsync not found at {args.refsync} (uv sync, or --refsync PATH)")
    Bench(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
