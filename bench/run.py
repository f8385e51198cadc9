"""refsync benchmark: MariaDB/MySQL -> PostgreSQL, refsync against its peers, same data, same run.

    uv run python bench/run.py                                  # 1,000,000 rows, 3 repeats
    uv run python bench/run.py --rows 100000 --repeat 1         # a quick end-to-end check
    uv run python bench/run.py --scenarios full,nochange --skip-gen
    uv run python bench/run.py --scenarios typed-full,typed-nochange,typed-verify --skip-gen

Generates the legacy tables with bench/gen_mysql.py (the text table annuity_plan and, for the
typed-* scenarios, the typed table typed_plan), creates its own PostgreSQL databases
(refsync_bench_target, _target_4t, _target_small, _target_10k, refsync_bench_peers: dropped and
recreated at the start), runs `refsync sync -c <generated config> --json` as a subprocess for each
scenario of issues 4, 9 and 12 and, interleaved with it (A B A B ...), the peers that are
installed: the raw `mariadb | psql \\copy` pipe of the same table, pgloader and Sling. Every timed
run gets an untimed CHECKPOINT first; it measures wall time, peak RSS (psutil polling every 20 ms
of the process tree, and the wait4() max RSS of the largest single process, as `/usr/bin/time -v`
reports it), client CPU, mysqld/postgres CPU, WAL bytes (`pg_current_wal_lsn()` before and
after), the bytes MariaDB sent (global `Bytes_sent` before and after) and, where it matters, how
many target rows got a new row version (primary key + xmin snapshot before, compared after).
Prints paired ratios, the goals of issues 4, 9 and 12 met / not met and Markdown tables; every
raw figure goes to --out (JSON). See bench/README.md.
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
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psutil
import psycopg
import pymysql
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

SCENARIOS = ("full", "typed-full", "nochange", "typed-nochange", "verify", "typed-verify",
             "1pct-full", "typed-1pct-full", "0.01pct-full", "typed-0.01pct-full",
             "0.1pct-full", "typed-0.1pct-full", "1pct-full-off", "typed-1pct-full-off",
             "0.01pct-full-off", "typed-0.01pct-full-off", "0.1pct-full-off",
             "0.01pct-after-1pct", "1pct-after-quiet", "1pct-incr",
             "incr-nochange-4tables", "startup", "memory-scaling", "seed-4tables-10k")
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
TYPED_COLS = ["plan_code", "plan_name", "amount", "headcount", "start_date", "is_active",
              "updated_at"]
TYPED_TARGET = ("business", "typed_plan", "plan_code")
TYPED_PG_TYPES = {"plan_code": "varchar(32)", "plan_name": "varchar(255)",
                  "amount": "numeric(18,4)", "headcount": "integer", "start_date": "date",
                  "is_active": "boolean", "updated_at": "timestamptz"}
SOURCE_TZ = "Asia/Shanghai"  # refsync's default source_timezone; the typed pipe's session zone

DB_TARGET = "refsync_bench_target"
DB_TARGET_4T = "refsync_bench_target_4t"
DB_TARGET_SMALL = "refsync_bench_target_small"
DB_TARGET_10K = "refsync_bench_target_10k"
DB_PEERS = "refsync_bench_peers"
BENCH_LOCK = 0x72656673796E6362  # "refsyncb": one benchmark at a time per PostgreSQL server


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def verdicts(fps: dict[str, Any], src: Any, stats_label: str) -> dict[str, str]:
    """Each copy's fingerprint against MariaDB's statistics and the pipe's row hash."""
    ref_hash = fps.get("pipe", {}).get("hash")
    result = {}
    for name, fp in fps.items():
        if "error" in fp:
            result[name] = "n/a (" + fp["error"][:80] + ")"
            continue
        failed = [x for x, ok in ((stats_label, fp["stats"] == src),
                                  ("row hash vs pipe", ref_hash is None or fp["hash"] == ref_hash))
                  if not ok]
        result[name] = "DIFFERS (" + ", ".join(failed) + ")" if failed else "identical"
    return result


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


@dataclass(frozen=True)
class Shape:
    """One benchmarked legacy table: the text one (annuity_plan) or the typed one (typed_plan)."""

    key: str  # "text" | "typed"
    prefix: str  # scenario names: "" | "typed-"
    source: str  # the MariaDB table
    source_cols: tuple[str, ...]  # what the pipe copies
    text_cols: frozenset[str]  # of those, the ones the pipe must COPY-escape
    target: tuple[str, str, str]  # refsync's target: schema, table, key column
    target_cols: tuple[str, ...]  # refsync's mapped columns (data checks)
    pipe_ddl: str  # peer_pipe.<source>
    pipe_tz: str | None  # the pipe's session TimeZone (naive DATETIME -> timestamptz)

    def scen(self, name: str) -> str:
        return self.prefix + name


TEXT = Shape(
    "text", "", "annuity_plan", tuple(ANNUITY_COLS), frozenset(ANNUITY_COLS), ANNUITY,
    tuple(ANNUITY_TARGET_COLS),
    "CREATE TABLE peer_pipe.annuity_plan (plan_code varchar(20) PRIMARY KEY,"
    " plan_name varchar(255), plan_type varchar(50), customer_name varchar(255),"
    " updated_at timestamp)", None)
TYPED = Shape(
    "typed", "typed-", "typed_plan", tuple(TYPED_COLS), frozenset({"plan_code", "plan_name"}),
    TYPED_TARGET, tuple(TYPED_COLS),
    "CREATE TABLE peer_pipe.typed_plan ("
    + ", ".join(f"{c} {t}" for c, t in TYPED_PG_TYPES.items()) + ", PRIMARY KEY (plan_code))",
    SOURCE_TZ)
SHAPES = {"text": TEXT, "typed": TYPED}


def typed_target_ddl() -> str:
    """business.typed_plan in the production style: typed columns, tracking columns, PK."""
    from refsync.demo_data import TRACKING_COLUMN_DDL

    cols = [f"{qi(c)} {t}{' NOT NULL' if c == 'plan_code' else ''}"
            for c, t in TYPED_PG_TYPES.items()]
    cols += [f"{qi(c)} {d}" for c, d in TRACKING_COLUMN_DDL.items()]
    cols.append(f"CONSTRAINT {qi('typed_plan_pkey')} PRIMARY KEY ({qi('plan_code')})")
    return (f"CREATE SCHEMA IF NOT EXISTS business;"
            f" CREATE TABLE IF NOT EXISTS {ref(*TYPED_TARGET[:2])} ({', '.join(cols)})")


# ---------------------------------------------------------------- measuring one command


# the benchmarked servers' pids (Bench.run resolves them): other mariadbd instances on the box,
# e.g. throw-away servers of someone's test suite, must not count as the benchmark's mysqld
SERVER_PIDS: dict[str, int | None] = {"mysqld": None, "postmaster": None}


def _cpu_of(pid: int, children: bool) -> float | None:
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system
        if children:  # the postmaster: reaped backends, and the live ones
            total += t.children_user + t.children_system
            for c in proc.children():
                try:
                    ct = c.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += ct.user + ct.system
        return total
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def server_cpu() -> dict[str, float]:
    """CPU seconds used so far by mysqld and by the postgres cluster (reaped backends too)."""
    my_pid, pm_pid = SERVER_PIDS["mysqld"], SERVER_PIDS["postmaster"]
    my = _cpu_of(my_pid, False) if my_pid else None
    pm = _cpu_of(pm_pid, True) if pm_pid else None
    out = {"mysqld": 0.0, "postgres": 0.0}
    if my is None or pm is None:
        out = _server_cpu_by_name()
    if my is not None:
        out["mysqld"] = my
    if pm is not None:
        out["postgres"] = pm
    return out


def _server_cpu_by_name() -> dict[str, float]:
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
                 pg: PG | None, checkpoint: bool = True, quiesce_s: float = 0.0,
                 probe: Callable[[], int | None] | None = None) -> dict[str, Any]:
    """Run `cmd` once; wall, peak RSS, CPU, server CPU and WAL. stdout/stderr go to `log`.*

    `probe` (MariaDB's global Bytes_sent) is read just before the spawn and just after the exit.
    """
    admin = pg.connect() if pg is not None else None
    try:
        lsn0 = lsn1 = None
        if admin is not None and checkpoint:
            admin.execute("CHECKPOINT")
        busy_before, waited = quiesce(quiesce_s) if quiesce_s > 0 else (None, 0.0)
        if admin is not None:
            lsn0 = admin.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        sent0 = probe() if probe is not None else None
        cpu0 = server_cpu()
        all0 = _busy_cpu_s()
        out_path, err_path = log.parent / f"{log.name}.out", log.parent / f"{log.name}.err"
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
        sent1 = probe() if probe is not None else None
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
        "mysql_bytes_sent": None if sent0 is None or sent1 is None else sent1 - sent0,
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
        self.table_bytes: dict[str, int] = {}  # shape key -> information_schema DATA_LENGTH
        self.cfgs: dict[str, Path] = {}  # shape key -> refsync config of that table alone
        self._sent_conn: Any = None

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

    def mysql_counts(self, db: str, tables: Iterable[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for t in tables:
            try:
                out[t] = int(self.mysql.query(f"SELECT COUNT(*) FROM `{t}`", db=db)[0][0])
            except pymysql.err.MySQLError:
                out[t] = None
        return out

    def ensure_data(self, db: str, rows: int, small: int, typed: int = 0) -> None:
        """The legacy tables of `db`; typed_plan too when `typed` > 0 (its rows)."""
        text = {"annuity_plan": rows, "portfolio_plan": small, "organization": small}
        want: dict[str, int | None] = {**text, **({"typed_plan": typed} if typed else {})}
        have = self.mysql_counts(db, want)
        stale = [t for t in want if have.get(t) != want[t]] if self.args.skip_gen else list(want)
        if not stale:
            say(f"data: {db} already holds the rows (--skip-gen): "
                + ", ".join(f"{t} {n:,}" for t, n in want.items() if n is not None))
            self.gen[db] = {"skipped": True, "counts": have}
            return
        gen = (list(text) if set(stale) & set(text) else []) + (
            ["typed_plan"] if "typed_plan" in stale else [])
        say(f"data: generating {db}: " + ", ".join(f"{t} {want[t]:,}" for t in gen) + " ...")
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, str(BENCH / "gen_mysql.py"), "--rows", str(rows), "--small-rows",
             str(small), "--typed-rows", str(typed), "--tables", ",".join(gen),
             "--url", self.mysql.url(db)],
            capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"gen_mysql.py failed ({p.returncode}):\n{p.stderr[-3000:]}")
        report = json.loads(p.stdout.strip().splitlines()[-1])
        report["wall_s"] = time.perf_counter() - t0
        self.gen[db] = report
        say(f"data: {db} generated in {report['wall_s']:.1f} s")

    def mutate(self, shape: Shape = TEXT, fraction: float = 0.01) -> dict[str, Any]:
        """bench/mutate_mysql.py: `fraction` of the rows renamed, updated_at = NOW() (text: the
        three text tables, as before; typed: typed_plan alone, its amount changed too)."""
        cmd = [sys.executable, str(BENCH / "mutate_mysql.py"), "--url",
               self.mysql.url(self.db_main), "--mutate", repr(fraction)]
        if shape is TYPED:
            cmd += ["--tables", "typed_plan"]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"mutate_mysql.py failed:\n{p.stderr[-3000:]}")
        self.mutations += 1
        report: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        return report

    def warm_mysql(self, db: str, typed: bool = False) -> None:
        """Untimed full scan so the first timed run does not pay for a cold page cache."""
        self.mysql.query("SELECT SUM(CHAR_LENGTH(plan_name)), SUM(CHAR_LENGTH(customer_name))"
                         " FROM annuity_plan", db=db)
        if typed:
            self.mysql.query("SELECT SUM(CHAR_LENGTH(plan_name)), SUM(amount) FROM typed_plan",
                             db=db)

    def resolve_server_pids(self) -> None:
        """mysqld's pid from @@pid_file, the postmaster's as the parent of our backend."""
        try:
            path = self.mysql.query("SELECT @@pid_file", db="")[0][0]
            SERVER_PIDS["mysqld"] = int(Path(str(path)).read_text().split()[0])
        except (OSError, ValueError, IndexError, pymysql.err.MySQLError):
            SERVER_PIDS["mysqld"] = None
        try:
            backend = int(self.pg_scalar(None, "SELECT pg_backend_pid()"))
            SERVER_PIDS["postmaster"] = psutil.Process(backend).ppid()
        except (psycopg.Error, psutil.Error, TypeError):
            SERVER_PIDS["postmaster"] = None
        say("server CPU from: " + ", ".join(
            f"{k} pid {v}" if v else f"{k}: every process of that name (pid not found)"
            for k, v in SERVER_PIDS.items()))

    def measure_table_bytes(self, shape: Shape) -> None:
        """information_schema DATA_LENGTH (after ANALYZE TABLE): the denominator of "x % of the
        table's bytes left MySQL" (the pipe's own Bytes_sent is reported beside it)."""
        self.mysql.query(f"ANALYZE TABLE `{shape.source}`", db=self.db_main)
        n = self.mysql.query("SELECT DATA_LENGTH FROM information_schema.TABLES"
                             " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                             (self.db_main, shape.source), db=self.db_main)
        if n:
            self.table_bytes[shape.key] = int(n[0][0])
            say(f"data: {shape.source} DATA_LENGTH {mb(n[0][0]):.1f} MB")

    def bytes_sent(self) -> int | None:
        """MariaDB's global Bytes_sent (every client's traffic counts, this probe's too)."""
        try:
            if self._sent_conn is None:
                self._sent_conn = self.mysql.connect("")
            with self._sent_conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Bytes_sent'")
                row = cur.fetchone()
            return int(row[1]) if row else None
        except pymysql.err.MySQLError:
            self._sent_conn = None
            return None

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
                conn.execute(typed_target_ddl())
                conn.execute("CREATE SCHEMA IF NOT EXISTS bench")

    def setup_peers_db(self) -> None:
        self.recreate_db(DB_PEERS, ddl=False)
        with self.pg.connect(DB_PEERS) as conn:
            conn.execute("CREATE SCHEMA peer_pipe")
            conn.execute(TEXT.pipe_ddl)
            conn.execute(TYPED.pipe_ddl)

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
                             pg=self.pg if db is not None else None, quiesce_s=self.args.quiesce,
                             probe=self.bytes_sent)
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

    @staticmethod
    def typed_table_spec() -> dict[str, Any]:
        """refsync's config entry for typed_plan (same sync_mode as the text table's)."""
        return {"name": "typed_plan", "target_table": TYPED_TARGET[1],
                "target_schema": TYPED_TARGET[0], "source_type": "legacy_mysql",
                "source_config": {"table": "typed_plan",
                                  "columns": [{"source": c, "target": c} for c in TYPED_COLS]},
                "sync_mode": "upsert", "primary_key": TYPED_TARGET[2]}

    def write_config(self, name: str, tables: list[str], incremental: Sequence[str] = (),
                     digests: str | None = None) -> Path:
        section = self.seed_section()
        section["tables"] = [*section["tables"], self.typed_table_spec()]
        by_name = {t["name"]: t for t in section["tables"]}
        picked = []
        for n in tables:
            t = json.loads(json.dumps(by_name[n]))
            sc = t["source_config"]
            if t["source_type"] == "config_file" and not Path(sc["file_path"]).is_absolute():
                sc["file_path"] = str(ROOT / sc["file_path"])
            if n in incremental and "incremental" not in sc:
                sc["incremental"] = {"updated_at_column": "updated_at"}
            if digests is not None:
                t["digests"] = digests
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
        if r.get("mysql_bytes_sent") is not None and r.get("table_bytes"):
            bits.append(f"MySQL sent {mb(r['mysql_bytes_sent']):.1f} MB"
                        f" ({100 * r['mysql_bytes_sent'] / r['table_bytes']:.1f} % of the table)")
        if r.get("summary"):
            bits.append(r["summary"])
        if r.get("available") is False:
            bits.append(f"NOT AVAILABLE: {r.get('error')}")
        elif not r["ok"]:
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

    @staticmethod
    def pipe_sql(shape: Shape = TEXT) -> str:
        """MariaDB formats COPY text: text columns escaped, the others as MariaDB prints them
        (DECIMAL, INT, DATE 'YYYY-MM-DD', DATETIME 'YYYY-MM-DD hh:mm:ss', TINYINT(1) 0/1 which
        PostgreSQL's boolean input takes); NULL as \\N."""
        def esc(c: str) -> str:
            if c not in shape.text_cols:
                return f"IFNULL(`{c}`,'\\\\N')"
            return (f"IFNULL(REPLACE(REPLACE(REPLACE(REPLACE(`{c}`,'\\\\','\\\\\\\\'),"
                    f"'\\t','\\\\t'),'\\n','\\\\n'),'\\r','\\\\r'),'\\\\N')")
        return f"SELECT {', '.join(esc(c) for c in shape.source_cols)} FROM `{shape.source}`"

    def run_peer(self, peer: str, scenario: str, i: int, mode: str = "full",
                 shape: Shape = TEXT, **fields: Any) -> dict[str, Any]:
        env = self.base_env()
        log = self._log(scenario, peer, i)
        check_table: str | None = None
        table = shape.source
        if peer == "pipe":
            info = self.peers["pipe"]
            if self.mysql.password:
                env["MYSQL_PWD"] = self.mysql.password
            # the session TimeZone makes PostgreSQL read naive DATETIMEs as that zone's wall
            # time (timestamptz); it is set in the same psql session as the \\copy
            tz = f"SET TimeZone = '{shape.pipe_tz or 'UTC'}'"
            script = ('"$0" -h "$1" -P "$2" -u "$3" --quick --batch --raw --skip-column-names'
                      ' --default-character-set=utf8mb4 -e "$4" "$5"'
                      ' | "$6" "$7" -X -q -1 -v ON_ERROR_STOP=1 -c "$8" -c "$9" -c "${10}"')
            cmd = ["bash", "-o", "pipefail", "-c", script, info["mysql"], self.mysql.host,
                   str(self.mysql.port), self.mysql.user, self.pipe_sql(shape), self.db_main,
                   info["psql"], self.pg.url(DB_PEERS), tz, f"TRUNCATE peer_pipe.{table}",
                   f"\\copy peer_pipe.{table} FROM pstdin"]
            check_table = f"peer_pipe.{table}"
        elif peer == "pgloader":
            load = self.work / "configs" / f"pgloader-{table}.load"
            load.write_text(
                "LOAD DATABASE\n"
                f"  FROM {self.mysql.url(self.db_main, 'mysql')}\n"
                f"  INTO {self.pg.url(DB_PEERS)}\n"
                f"  INCLUDING ONLY TABLE NAMES MATCHING '{table}'\n"
                f"  ALTER SCHEMA '{self.db_main}' RENAME TO 'pgloader';\n", encoding="utf-8")
            cmd = [self.peers["pgloader"]["exe"], str(load)]
            check_table = f"pgloader.{table}"
        elif peer == "sling":
            env.update(SLING_DISABLE_TELEMETRY="true",
                       SLING_HOME_DIR=str(self.work / "sling-home"),
                       BENCH_MYSQL=self.mysql.url(self.db_main, "mysql"),
                       BENCH_PG=self.pg.url(DB_PEERS, sslmode=True))
            cmd = [self.peers["sling"]["exe"], "run", "--src-conn", "BENCH_MYSQL",
                   "--src-stream", f"{self.db_main}.{table}", "--tgt-conn", "BENCH_PG"]
            if mode == "full":
                cmd += ["--tgt-object", f"peer_sling.{table}", "--mode", "full-refresh"]
                check_table = f"peer_sling.{table}"
            else:
                cmd += ["--tgt-object", "peer_sling_incr.annuity_plan", "--mode", "incremental",
                        "--primary-key", "plan_code", "--update-key", "updated_at"]
        else:
            raise ValueError(peer)
        r = self.measure(cmd, env, log, DB_PEERS)
        r["ok"] = r["rc"] == 0
        r.update(shape=shape.key, table_bytes=self.table_bytes.get(shape.key), **fields)
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

    def ensure_loaded(self, shape: Shape = TEXT) -> None:
        n = self.pg_scalar(DB_TARGET, f"SELECT count(*) FROM {ref(*shape.target[:2])}")
        if n != self.rows:
            self.truncate(DB_TARGET, [shape.target])
            self.prime(f"first load of {shape.source}", self.cfgs[shape.key], DB_TARGET,
                       self.db_main)

    def sync_fields(self, shape: Shape) -> dict[str, Any]:
        return {"shape": shape.key, "table_bytes": self.table_bytes.get(shape.key)}

    def s_full(self, shape: Shape = TEXT) -> None:
        scen = shape.scen("full")
        say(f"\n== {scen}: first load of {shape.source} ({self.rows:,} rows) into an empty"
            f" {shape.target[0]}.{shape.target[1]}, interleaved with the peers")
        for i in range(self.repeat):
            self.truncate(DB_TARGET, [shape.target])
            self.run_refsync(scen, "refsync", i, self.cfgs[shape.key], DB_TARGET, self.db_main,
                             **self.sync_fields(shape))
            for peer in ("pipe", "pgloader", "sling"):
                if peer in self.peers:
                    self.run_peer(peer, scen, i, shape=shape)
        if shape is TEXT:
            self.verify_full()
        else:
            self.verify_full_typed()

    def s_nochange(self, shape: Shape = TEXT) -> None:
        scen = shape.scen("nochange")
        say(f"\n== {scen}: --full re-sync of {shape.source}, nothing changed (pipe interleaved)")
        self.ensure_loaded(shape)
        for i in range(self.repeat):
            self.vacuum(DB_TARGET, [shape.target])
            self.snapshot_xmin(DB_TARGET, [shape.target])
            r = self.run_refsync(scen, "refsync", i, self.cfgs[shape.key], DB_TARGET,
                                 self.db_main, ["--full"], record=False,
                                 **self.sync_fields(shape))
            r["rows_rewritten"], r["rows_gone"], _ = self.rewritten(DB_TARGET, [shape.target])
            self.record(scen, "refsync", i, r)
            if "pipe" in self.peers:
                self.run_peer("pipe", scen, i, shape=shape)

    def mutated_keys(self, report: dict[str, Any], shape: Shape = TEXT) -> set[str]:
        # a window around the mutation's NOW(): typed_plan also holds DATETIMEs in the future
        rows = self.mysql.query(
            f"SELECT plan_code FROM `{shape.source}` WHERE updated_at BETWEEN"
            " CAST(%s AS DATETIME(6)) - INTERVAL 1 SECOND AND CAST(%s AS DATETIME(6))"
            " + INTERVAL 1 SECOND", (str(report["now"]).replace("T", " "),) * 2,
            db=self.db_main)
        return {r[0] for r in rows}

    def s_mutated_full(self, shape: Shape, fraction: float, name: str,
                       digests_off: bool = False, night_before: float | None = None) -> None:
        """`fraction` of the rows changed, then a --full re-sync; `night_before`: each timed
        night follows an untimed one that changed this share (a night unlike the last)."""
        scen = shape.scen(name + ("-off" if digests_off else ""))
        cfg = self.cfgs[shape.key + ("-off" if digests_off else "")]
        before = ("" if night_before is None else
                  f" after an untimed night that changed ~{100 * night_before:g} %")
        say(f"\n== {scen}: bench/mutate_mysql.py (~{100 * fraction:g} % of {shape.source}),"
            f" then --full re-sync{' with digests: off' if digests_off else ''}{before}"
            " (pipe interleaved)")
        self.ensure_loaded(shape)
        for i in range(self.repeat):
            if night_before is not None:
                self.mutate(shape, night_before)
                self.run_refsync(scen, "night-before", i, cfg, DB_TARGET, self.db_main,
                                 ["--full"], record=False)
            m = self.mutate(shape, fraction)
            changed = self.mutated_keys(m, shape)
            self.vacuum(DB_TARGET, [shape.target])
            self.snapshot_xmin(DB_TARGET, [shape.target])
            r = self.run_refsync(scen, "refsync", i, cfg, DB_TARGET,
                                 self.db_main, ["--full"], record=False,
                                 **self.sync_fields(shape))
            n, gone, keys = self.rewritten(DB_TARGET, [shape.target], keys_of_first=True)
            assert keys is not None
            r.update(rows_rewritten=n, rows_gone=gone, changed=len(changed),
                     mutate_reported=m["tables"][shape.source]["updated"],
                     exact=keys == changed, extra_rewritten=len(keys - changed),
                     missed=len(changed - keys), fraction=fraction)
            r["summary"] += (f" | changed {len(changed):,}, exactly those rewritten:"
                             f" {'yes' if r['exact'] else 'NO'}")
            self.record(scen, "refsync", i, r)
            if "pipe" in self.peers:
                self.run_peer("pipe", scen, i, shape=shape)
        self.verify_target_vs_mysql(f"after {scen}", shape)

    def s_verify(self, shape: Shape = TEXT) -> None:
        """`refsync verify -c CFG --json` on an unchanged table (issue 12); the command may not
        exist yet: exit 2 with click's "No such command" is reported as not available."""
        scen = shape.scen("verify")
        say(f"\n== {scen}: refsync verify of {shape.source}, nothing changed (pipe interleaved)")
        self.ensure_loaded(shape)
        env = self.refsync_env(DB_TARGET, self.db_main)
        for i in range(self.repeat):
            self.vacuum(DB_TARGET, [shape.target])
            self.snapshot_xmin(DB_TARGET, [shape.target])
            cmd = [self.refsync, "verify", "-c", str(self.cfgs[shape.key]), "--json"]
            version = code_version()
            r = self.measure(cmd, env, self._log(scen, "refsync", i), DB_TARGET)
            r.update(code_version=version, **self.sync_fields(shape))
            err = _ANSI.sub("", Path(r["stderr_file"]).read_text(errors="replace"))
            if r["rc"] == 2 and re.search(r"no such command", err, re.I):
                r.update(ok=False, available=False,
                         error="refsync has no `verify` command yet (exit 2, No such command)")
                self.record(scen, "refsync", i, r)
                return
            doc = None
            for line in reversed(Path(r["stdout_file"]).read_text(errors="replace")
                                 .splitlines()):
                if line.startswith("{"):
                    try:
                        doc = json.loads(line)
                    except ValueError:
                        continue
                    break
            r["refsync"] = doc
            r["rows_rewritten"], r["rows_gone"], _ = self.rewritten(DB_TARGET, [shape.target])
            r["ok"] = r["rc"] == 0 and doc is not None
            if not r["ok"]:
                r["error"] = (f"rc={r['rc']} ({'not in step' if r['rc'] == 1 else 'error'})"
                              f"{'' if doc is not None else ', no JSON'}: " + tail(
                                  r["stderr_file"], 3))
            self.record(scen, "refsync", i, r)
            if "pipe" in self.peers:
                self.run_peer("pipe", scen, i, shape=shape)

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
        # issue 9: `refsync status` of the seed's four tables (state tables in place, untimed
        # init-db; --no-fail: a table that never ran must not make it exit 1)
        cfg = self.write_config("four-incremental", list(TARGETS),
                                incremental=["年金计划", "组合计划", "组织架构"])
        env4 = self.refsync_env(DB_TARGET_4T, self.db_main)
        p = subprocess.run([self.refsync, "init-db", "-c", str(cfg)], env=env4, cwd=self.work,
                           capture_output=True, text=True)
        if p.returncode != 0:
            self.notes.append(f"startup: `refsync init-db` failed (rc {p.returncode}):"
                              f" {p.stderr.strip()[-200:]}")
        for i in range(self.nruns("startup")):
            r = self.measure([self.refsync, "status", "-c", str(cfg), "--no-fail", "--json"],
                             env4, self._log("startup", "refsync-status", i), None)
            self.record("startup", "refsync status", i, r)

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
            result = verdicts(fps, src, "counts/lengths vs MariaDB")
            self.checks["after full"] = {"mysql": src, "fingerprints": fps, "result": result}
            say("  data check (count, NULLs, '' and lengths per column vs MariaDB;"
                " row hash vs the pipe): "
                + ", ".join(f"{k} {v}" for k, v in result.items()))
        except (psycopg.Error, pymysql.err.MySQLError) as exc:
            say(f"  data check failed to run: {exc}")

    # typed_plan: per column non-NULL counts, exact sums, text lengths; a row hash over a
    # canonical rendering (numeric(18,4), integer, date, 0/1, and updated_at as the naive wall
    # time MariaDB holds: a timestamptz is read back in Asia/Shanghai) that the peers' own
    # column types (Sling's smallint and timestamp, pgloader's bigint) also cast to
    TYPED_MYSQL_STATS = (
        "COUNT(*), COUNT(plan_name), COUNT(amount), COUNT(headcount), COUNT(start_date),"
        " COUNT(is_active), COUNT(updated_at), COALESCE(SUM(amount), 0),"
        " COALESCE(SUM(headcount), 0), COALESCE(SUM(is_active), 0),"
        " COALESCE(SUM(CHAR_LENGTH(plan_name)), 0), COALESCE(SUM(plan_name = ''), 0),"
        " COALESCE(SUM(DATEDIFF(start_date, '2000-01-01')), 0)")
    TYPED_PG_STATS = (
        "count(*), count(plan_name), count(amount), count(headcount), count(start_date),"
        " count(is_active), count(updated_at), coalesce(sum(amount::numeric), 0),"
        " coalesce(sum(headcount::bigint), 0), coalesce(sum(is_active::int), 0),"
        " coalesce(sum(length(plan_name)), 0),"
        " count(*) FILTER (WHERE length(plan_name) = 0),"
        " coalesce(sum(start_date::date - date '2000-01-01'), 0)")
    TYPED_PG_HASH = (
        "coalesce(sum(hashtext(concat_ws('|', quote_nullable(plan_code::text),"
        " quote_nullable(plan_name::text), quote_nullable(amount::numeric(18,4)::text),"
        " quote_nullable(headcount::bigint::text), quote_nullable(start_date::date::text),"
        " quote_nullable(is_active::int::text),"
        " quote_nullable({wall}::text)))::bigint), 0)")

    @staticmethod
    def _norm(row: Sequence[Any]) -> list[str]:
        return [str(Decimal(str(x if x is not None else 0)).normalize()) for x in row]

    def fingerprint_typed(self, db: str, table: str) -> dict[str, Any]:
        typ = self.pg_scalar(db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                             " WHERE attrelid = %s::regclass AND attname = 'updated_at'",
                             (table,))
        wall = (f"(updated_at AT TIME ZONE '{SOURCE_TZ}')" if typ == "timestamp with time zone"
                else "updated_at::timestamp")
        hash_sql = self.TYPED_PG_HASH.format(wall=wall)
        row = self.pg_scalar_row(db, f"SELECT {self.TYPED_PG_STATS}, {hash_sql} FROM {table}")
        return {"stats": self._norm(row[:-1]), "hash": int(row[-1])}

    def fingerprint_mysql_typed(self, db: str) -> list[str]:
        row = self.mysql.query(f"SELECT {self.TYPED_MYSQL_STATS} FROM typed_plan", db=db)[0]
        return self._norm(row)

    def verify_full_typed(self) -> None:
        """After typed-full: counts/sums per column vs MariaDB, row hash vs the pipe's."""
        try:
            src = self.fingerprint_mysql_typed(self.db_main)
            tables = {"refsync": (DB_TARGET, ref(*TYPED_TARGET[:2]))}
            for peer, table in (("pipe", "peer_pipe.typed_plan"),
                                ("pgloader", "pgloader.typed_plan"),
                                ("sling", "peer_sling.typed_plan")):
                if peer in self.peers:
                    tables[peer] = (DB_PEERS, table)
            fps: dict[str, Any] = {}
            for name, (db, table) in tables.items():
                try:
                    fps[name] = self.fingerprint_typed(db, table)
                except psycopg.Error as exc:
                    fps[name] = {"error": str(exc).strip()}
            result = verdicts(fps, src, "counts/sums vs MariaDB")
            self.checks["after typed-full"] = {"mysql": src, "fingerprints": fps,
                                               "result": result}
            say("  data check (count, NULLs and sums per column vs MariaDB; row hash incl."
                f" updated_at's {SOURCE_TZ} wall time vs the pipe's): "
                + ", ".join(f"{k} {v}" for k, v in result.items()))
            if "pgloader" in result and result["pgloader"].startswith("DIFFERS"):
                say("  (pgloader reads DATETIME in its PostgreSQL session's zone, UTC, by"
                    f" default; the pipe and refsync read it as {SOURCE_TZ} wall time)")
        except (psycopg.Error, pymysql.err.MySQLError) as exc:
            say(f"  data check failed to run: {exc}")

    def verify_target_vs_mysql(self, label: str, shape: Shape = TEXT) -> None:
        try:
            if shape is TYPED:
                src2 = self.fingerprint_mysql_typed(self.db_main)
                fp2 = self.fingerprint_typed(DB_TARGET, ref(*TYPED_TARGET[:2]))
                res = "identical" if fp2["stats"] == src2 else "DIFFERS"
                self.checks[label] = {"mysql": src2, "refsync": fp2, "result": res}
                say(f"  data check {label}: refsync target vs MariaDB {res}")
                return
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
        self.resolve_server_pids()
        say("machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()))
        self.detect_peers()
        self.wal = WalAttributor(self.pg)
        say("WAL: " + ("records of the run's own database, from pg_waldump (cluster-wide"
                       " figures in the JSON)" if self.wal.exe else
                       f"cluster-wide pg_current_wal_lsn() difference ({self.wal.why})"))
        s = set(self.scenarios)
        typed = {x for x in s if x.startswith("typed-")}
        big = (s & {"full", "nochange", "verify", "1pct-full", "0.01pct-full", "0.1pct-full",
                    "1pct-full-off", "0.01pct-full-off", "0.1pct-full-off", "1pct-incr",
                    "0.01pct-after-1pct", "1pct-after-quiet",
                    "incr-nochange-4tables", "memory-scaling"}) | typed
        if big:
            self.ensure_data(self.db_main, self.rows, self.small_rows,
                             self.rows if typed else 0)
            self.measure_table_bytes(TEXT)
            if typed:
                self.measure_table_bytes(TYPED)
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
        self.cfgs = {"text": cfg_full, "typed": self.write_config("typed-full", ["typed_plan"]),
                     "text-off": self.write_config("annuity-full-off", ["年金计划"],
                                                   digests="off"),
                     "typed-off": self.write_config("typed-full-off", ["typed_plan"],
                                                    digests="off")}
        if big:
            self.warm_mysql(self.db_main, typed=bool(typed))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("startup", self.s_startup),
            ("full", lambda: self.s_full(TEXT)),
            ("typed-full", lambda: self.s_full(TYPED)),
            ("nochange", lambda: self.s_nochange(TEXT)),
            ("typed-nochange", lambda: self.s_nochange(TYPED)),
            ("verify", lambda: self.s_verify(TEXT)),
            ("typed-verify", lambda: self.s_verify(TYPED)),
            ("1pct-full", lambda: self.s_mutated_full(TEXT, 0.01, "1pct-full")),
            ("typed-1pct-full", lambda: self.s_mutated_full(TYPED, 0.01, "1pct-full")),
            ("0.01pct-full", lambda: self.s_mutated_full(TEXT, 0.0001, "0.01pct-full")),
            ("typed-0.01pct-full", lambda: self.s_mutated_full(TYPED, 0.0001, "0.01pct-full")),
            ("0.1pct-full", lambda: self.s_mutated_full(TEXT, 0.001, "0.1pct-full")),
            ("typed-0.1pct-full", lambda: self.s_mutated_full(TYPED, 0.001, "0.1pct-full")),
            ("1pct-full-off", lambda: self.s_mutated_full(TEXT, 0.01, "1pct-full", True)),
            ("typed-1pct-full-off",
             lambda: self.s_mutated_full(TYPED, 0.01, "1pct-full", True)),
            ("0.01pct-full-off", lambda: self.s_mutated_full(TEXT, 0.0001, "0.01pct-full", True)),
            ("typed-0.01pct-full-off",
             lambda: self.s_mutated_full(TYPED, 0.0001, "0.01pct-full", True)),
            ("0.1pct-full-off", lambda: self.s_mutated_full(TEXT, 0.001, "0.1pct-full", True)),
            ("0.01pct-after-1pct", lambda: self.s_mutated_full(
                TEXT, 0.0001, "0.01pct-after-1pct", night_before=0.01)),
            ("1pct-after-quiet", lambda: self.s_mutated_full(
                TEXT, 0.01, "1pct-after-quiet", night_before=0.0001)),
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
        for sh in (TEXT, TYPED):
            f = sh.scen("full")
            if sh is TYPED:
                pair_specs += [(f"refsync/{b} ({f})", f, "refsync", f, b)
                               for b in ("pipe", "pgloader", "sling")]
            pair_specs += [(f"{a}/pipe ({f})", f, a, f, "pipe") for a in ("pgloader", "sling")]
        for name in ("nochange", "verify", "1pct-full", "0.01pct-full"):
            for sh in (TEXT, TYPED):
                sc = sh.scen(name)
                if (sh, name) != (TEXT, "nochange"):  # that one is above, under its old label
                    pair_specs.append((f"refsync/pipe ({sc})", sc, "refsync", sc, "pipe"))
        self.pair_results: dict[str, Any] = {}
        say("\n## Paired ratios (A B A B ..., ratio taken pair by pair, then the median)\n")
        say("| pair | pairs | A median s | B median s | A/B per pair | A/B median (min–max) |")
        say("|---|---|---|---|---|---|")
        for label, sa, ra, sb, rb in pair_specs:
            p = self.pairs(sa, ra, sb, rb)
            self.pair_results[label] = p
            if p is None:
                a_runs = self._runs(sa, ra)
                if not a_runs and not self._runs(sb, rb):
                    continue  # scenario not run
                if a_runs and all(r.get("available") is False for r in a_runs):
                    miss = "not available"
                else:
                    miss = rb if not self._runs(sb, rb) else "failed runs"
                say(f"| {label} | 0 | | | n/a ({miss}) | |")
                continue
            say(f"| {label} | {p['n']} | {p['a_median_s']:.2f} | {p['b_median_s']:.2f} |"
                f" {', '.join(f'{x:.2f}' for x in p['ratios'])} |"
                f" **{p['median']:.2f}** ({p['min']:.2f}–{p['max']:.2f}) |")
        self.goals = self.compute_goals()
        self.goals += self.compute_goals_9()
        self.goals += self.compute_goals_12()
        for issue, title in (("4", "issue 4"),
                             ("9", "issue 9: one read pipeline, typed tables as fast as text"),
                             ("12", "issue 12: unchanged data never leaves the source")):
            rows = [g for g in self.goals if g.get("issue", "4") == issue]
            if not rows:
                continue
            say(f"\n## Goals ({title})\n")
            say("| # | goal | measured | status |")
            say("|---|---|---|---|")
            for g in rows:
                say(f"| {g['id']} | {g['goal']} | {g['measured']} | {g['status']} |")
        self.report_bytes()
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
            if any(r.get("changed") is not None for r in rs) and rew:
                exact = all(r.get("exact") for r in rs)
                changed = ", ".join(str(r.get("changed")) for r in rs)
                rew_s += (f" (changed {changed};"
                          f" {'exactly those' if exact else 'NOT exactly those'})")
            nok = sum(1 for r in every if r["ok"])
            status = "not available" if all(r.get("available") is False for r in every) else (
                "ok" if nok == len(every) else None)
            status = status or (
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

    # -- goals of issues 9 and 12

    @staticmethod
    def _goal(goals: list[dict[str, Any]], issue: str, gid: str, goal: str,
              value: float | None, limit: float | None, measured: str,
              ok: bool | None = None, why: str = "") -> None:
        if ok is None and value is not None and limit is not None:
            ok = value <= limit
        status = ("met" if ok else "NOT met") if ok is not None else (why or "n/a")
        goals.append({"issue": issue, "id": gid, "goal": goal, "value": value, "limit": limit,
                      "measured": measured, "status": status})

    def _ratio(self, goals: list[dict[str, Any]], issue: str, gid: str, goal: str, label: str,
               limit: float, extra: str = "") -> None:
        p = self.pair_results.get(label)
        if p is None:
            sa = label.split("(")[-1].rstrip(")")
            a_runs = [r for r in self.runs if r["scenario"] == sa and r["runner"] == "refsync"]
            why = ("n/a (not available)" if a_runs and all(
                r.get("available") is False for r in a_runs) else
                "n/a (not run)" if not a_runs else "n/a (failed or peer not run)")
            self._goal(goals, issue, gid, goal, None, limit, "not measured" + extra, why=why)
        else:
            self._goal(goals, issue, gid, goal, p["median"], limit,
                       f"{p['median']:.2f}× (pairs {', '.join(f'{x:.2f}' for x in p['ratios'])};"
                       f" {p['a_median_s']:.2f} s vs {p['b_median_s']:.2f} s){extra}")

    def compute_goals_9(self) -> list[dict[str, Any]]:
        goals: list[dict[str, Any]] = []
        i9 = "9"
        self._ratio(goals, i9, "9.1", "first load, typed table ≤ 1.5 × its pipe",
                    "refsync/pipe (typed-full)", 1.5)
        self._ratio(goals, i9, "9.2", "first load, text table ≤ 1.3 × its pipe",
                    "refsync/pipe (full)", 1.3)
        for gid, label, what in (("9.3a", "refsync/pgloader (full)", "text vs pgloader"),
                                 ("9.3b", "refsync/sling (full)", "text vs Sling"),
                                 ("9.3c", "refsync/pgloader (typed-full)", "typed vs pgloader"),
                                 ("9.3d", "refsync/sling (typed-full)", "typed vs Sling")):
            self._ratio(goals, i9, gid, f"first load ≤ 0.6 × the peer: {what}", label, 0.6)
        g4 = next((g for g in self.goals if g["id"] == "4"), None)
        if g4 is not None:
            self._goal(goals, i9, "9.4", "incremental, nothing new, the seed's four tables ≤ 2"
                       " × Sling's one-table no-change", g4["value"], 2.0, g4["measured"],
                       ok=None if g4["status"] not in ("met", "NOT met") else
                       g4["status"] == "met")
        else:
            self._goal(goals, i9, "9.4", "incremental, nothing new, the seed's four tables ≤ 2"
                       " × Sling's one-table no-change", None, 2.0, "not measured",
                       why="n/a (run incr-nochange-4tables)")
        for gid, runner, limit in (("9.5a", "refsync --help", 0.25),
                                   ("9.5b", "refsync status", 0.5)):
            st = [r for r in self._runs("startup", runner)]
            w = median(r["wall_s"] for r in st if r["ok"])
            what = runner.replace("refsync ", "`refsync ") + "`" + (
                " (four tables)" if "status" in runner else "")
            if w is None:
                err = "" if not st else (st[0].get("error") or tail(st[0]["stderr_file"], 1))
                self._goal(goals, i9, gid, f"{what} ≤ {limit} s", None, limit,
                           "not measured" if not st else f"failed: {err}",
                           why="n/a (run startup)" if not st else "NOT met")
            else:
                self._goal(goals, i9, gid, f"{what} ≤ {limit} s", w, limit,
                           f"{w:.3f} s median of {len(st)}")
        for gid, scen in (("9.6a", "full"), ("9.6b", "typed-full")):
            rs = [r for r in self._runs(scen, "refsync") if r["ok"]]
            peak = median(mb(r["peak_rss_bytes"]) for r in rs)
            label = f"peak memory ≤ 150 MB, {'typed' if 'typed' in scen else 'text'} first load"
            if peak is None:
                self._goal(goals, i9, gid, label, None, 150, "not measured",
                           why=f"n/a (run {scen})")
            else:
                self._goal(goals, i9, gid, label, peak, 150, f"{peak:.0f} MB at {self.rows:,}"
                           " rows" + ("" if self.rows == 1_000_000 else
                                      " (goal is stated for 1,000,000)"))
        g5b = next((g for g in self.goals if g["id"] == "5b"), None)
        if g5b is not None:
            self._goal(goals, i9, "9.6c", "peak memory flat from rows/10 to rows (≤ 1.3×)",
                       g5b["value"], 1.3, g5b["measured"] + " (text table, memory-scaling)")
        return goals

    def sent(self, scen: str, runner: str = "refsync") -> float | None:
        """The fewest bytes MariaDB sent during one of the runs: the counter is global, other
        clients' traffic can only add to it, so the minimum is the least polluted figure."""
        v = [r["mysql_bytes_sent"] for r in self._runs(scen, runner)
             if r["ok"] and r.get("mysql_bytes_sent") is not None]
        return min(v) if v else None

    def compute_goals_12(self) -> list[dict[str, Any]]:
        goals: list[dict[str, Any]] = []
        for sh in (TEXT, TYPED):
            t = sh.key
            tb = self.table_bytes.get(t)
            if not any(r["scenario"] in {sh.scen(x) for x in (
                    "nochange", "1pct-full", "0.01pct-full", "verify")} for r in self.runs):
                continue
            sc = sh.scen("nochange")
            self._ratio(goals, "12", f"12.1a {t}", f"unchanged --full ≤ 0.6 × the pipe ({t})",
                        "refsync-nochange/pipe" if sh is TEXT else f"refsync/pipe ({sc})", 0.6)
            rs = [r for r in self._runs(sc, "refsync") if r["ok"]]
            if rs:
                rew = [r["rows_rewritten"] for r in rs]
                self._goal(goals, "12", f"12.1b {t}", f"unchanged --full: 0 row versions ({t})",
                           max(rew), 0, f"rows rewritten {', '.join(map(str, rew))}",
                           ok=max(rew) == 0)
            b = self.sent(sc)
            if b is not None and tb:
                self._goal(goals, "12", f"12.1c {t}", "unchanged --full: ≤ 2 % of the table's"
                           f" bytes leave MySQL ({t})", b / tb, 0.02,
                           f"{mb(b):.1f} MB Bytes_sent (fewest of the runs) vs DATA_LENGTH"
                           f" {mb(tb):.1f} MB = {100 * b / tb:.1f} % (global counter: other"
                           " clients count too)")
            sc = sh.scen("1pct-full")
            self._ratio(goals, "12", f"12.2a {t}", f"1 % changed, --full ≤ 1.2 × the pipe ({t})",
                        f"refsync/pipe ({sc})", 1.2)
            rs = [r for r in self._runs(sc, "refsync") if r["ok"]]
            if rs:
                self._goal(goals, "12", f"12.2b {t}", f"1 % changed: only changed rows"
                           f" rewritten, xmin ({t})", None, None,
                           "; ".join(f"changed {r['changed']}, rewritten {r['rows_rewritten']}"
                                     f" (+{r['extra_rewritten']} other, {r['missed']} missed)"
                                     for r in rs), ok=all(r["exact"] for r in rs))
            self._ratio(goals, "12", f"12.3 {t}", f"0.01 % changed, --full ≤ 0.7 × the pipe"
                        f" ({t})", f"refsync/pipe ({sh.scen('0.01pct-full')})", 0.7)
            self._ratio(goals, "12", f"12.4 {t}", f"`verify`, unchanged ≤ 0.6 × the pipe ({t})",
                        f"refsync/pipe ({sh.scen('verify')})", 0.6)
        return goals

    def report_bytes(self) -> None:
        """Issue 12: what left MySQL during each run, next to the time."""
        names = ("full", "nochange", "verify", "1pct-full", "0.01pct-full")
        rows = []
        for sh in (TEXT, TYPED):
            pipe_v = [r["mysql_bytes_sent"] for r in self.runs
                      if r.get("shape") == sh.key and r["runner"] == "pipe"
                      and r["ok"] and r.get("mysql_bytes_sent") is not None]
            pipe_b = min(pipe_v) if pipe_v else None
            tb = self.table_bytes.get(sh.key)
            for name in names:
                sc = sh.scen(name)
                for runner in ("refsync", "pipe"):
                    rs = self._runs(sc, runner)
                    if not rs:
                        continue
                    ok = [r for r in rs if r["ok"]]
                    b = self.sent(sc, runner)
                    w = median(r["wall_s"] for r in ok)
                    p = self.pairs(sc, "refsync", sc, "pipe") if runner == "refsync" else None
                    rew = [r["rows_rewritten"] for r in ok if r.get("rows_rewritten") is not None]
                    st = ("not available" if all(r.get("available") is False for r in rs)
                          else "ok" if len(ok) == len(rs) else f"FAILED {len(rs) - len(ok)}")
                    rows.append(
                        f"| {sc} | {runner} | {fmt(w)} | {fmt(p['median']) if p else ''} |"
                        f" {fmt(mb(b), 1)} | {fmt(100 * b / tb, 1) if b is not None and tb else ''}"
                        f" | {fmt(100 * b / pipe_b, 1) if b is not None and pipe_b else ''} |"
                        f" {', '.join(map(str, rew))} | {st} |")
        if not rows:
            return
        say("\n## Bytes that left MySQL (issue 12)\n")
        say("MariaDB's global `Bytes_sent` before and after each run; the counter is global:"
            " every client's traffic counts, so other sessions' queries land in it too, and the"
            " fewest bytes of the runs is shown (their traffic can only add). The table's size"
            " is information_schema DATA_LENGTH: "
            + ", ".join(f"{s.source} {mb(self.table_bytes[s.key]):.1f} MB"
                        for s in (TEXT, TYPED) if s.key in self.table_bytes) + ".\n")
        say("| scenario | runner | median wall s | × pipe (paired median) | MySQL sent MB (min) |"
            " % of DATA_LENGTH | % of the pipe's bytes | rows rewritten | status |")
        say("|---|---|---|---|---|---|---|---|---|")
        for line in rows:
            say(line)

    def save(self) -> None:
        doc = {
            "started": self.started.isoformat(timespec="seconds"),
            "args": {k: v for k, v in vars(self.args).items()},
            "rows": self.rows, "repeat": self.repeat, "scenarios": self.scenarios,
            "machine": getattr(self, "machine", {}), "peers": self.peers,
            "generation": self.gen, "runs": self.runs, "checks": self.checks,
            "pairs": getattr(self, "pair_results", {}), "goals": getattr(self, "goals", []),
            "table": getattr(self, "table", []), "notes": self.notes,
            "table_bytes": self.table_bytes, "server_pids": SERVER_PIDS,
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
