"""legacy_mysql / sql sources against a real MariaDB (or MySQL): streaming, the incremental
window, MySQL type traps, error classification, and no password anywhere."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tcp_proxy import CuttingProxy

from refsync.config import MySQLPool, Settings, TableSpec
from refsync.errors import ConnectionFailure, NotConfigured, QueryFailure
from refsync.sources import LegacyMySQLSource, SqlSource, dispose_engines, open_source
from refsync.sources.mysql import get_engine

pytestmark = pytest.mark.integration

ROWS = 20_000
T0 = datetime(2024, 11, 27, 18, 3, 11, 250000)
SECRET = "S3cr3t-Zebra-71"
PW_USER = f"refsync_pw_{os.getpid()}"  # test sessions may run side by side

PLAN_COLUMNS = [("plan_code", "年金计划号"), ("plan_name", "计划名称"), ("plan_type", "计划类型"),
                ("customer_name", "客户名称")]


# ---------------------------------------------------------------- helpers and fixtures


def settings_for(url: sa.URL, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "legacy_mysql_host": url.host, "legacy_mysql_port": url.port or 3306,
        "legacy_mysql_user": url.username, "legacy_mysql_password": url.password,
        "legacy_mysql_database": url.database, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_spec(table: str, columns: list[tuple[str, str]] | None = None, *,
              cursor: str | None = None, where: str | None = None,
              source_type: str = "legacy_mysql", url: str | None = None) -> TableSpec:
    cols = columns or PLAN_COLUMNS
    sc: dict[str, Any] = {"table": table, "columns": [{"source": s, "target": t} for s, t in cols]}
    if cursor:
        sc["incremental"] = {"updated_at_column": cursor, **({"where": where} if where else {})}
    if url:
        sc["url"] = url
    return TableSpec.model_validate({
        "name": table, "target_table": table, "source_type": source_type, "source_config": sc,
        "primary_key": cols[0][1]})


def read(src: SqlSource, since: Any = None) -> list[tuple[Any, ...]]:
    return [row for batch in src.iter_batches(since) for row in batch]


@pytest.fixture(scope="module")
def db(mysql_db_url: str) -> sa.URL:
    return sa.engine.make_url(mysql_db_url)


@pytest.fixture(scope="module")
def admin(db: sa.URL) -> Iterator[sa.Engine]:
    """A read-write engine on the module's database, for setting up tables."""
    engine = sa.create_engine(db, connect_args={"charset": "utf8mb4"})
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _dispose_after_each_test() -> Iterator[None]:
    yield
    dispose_engines()
    gc.collect()  # PyMySQL cursors left half-read would complain here, failing the test


@pytest.fixture(scope="module")
def plans(admin: sa.Engine) -> str:
    """`annuity_plan`: 20,000 rows, updated_at DATETIME(6) one millisecond apart from T0."""
    with admin.begin() as conn:
        conn.exec_driver_sql("""
            CREATE TABLE annuity_plan (
                plan_code VARCHAR(20) PRIMARY KEY, plan_name VARCHAR(200), plan_type VARCHAR(20),
                customer_name VARCHAR(200), updated_at DATETIME(6) NULL
            ) CHARACTER SET utf8mb4""")
        t = sa.table("annuity_plan", *(sa.column(c) for c in (
            "plan_code", "plan_name", "plan_type", "customer_name", "updated_at")))
        conn.execute(t.insert(), [
            {"plan_code": f"AP{i:06}", "plan_name": f"企业年金计划{i}",
             "plan_type": ("DB", "DC")[i % 2], "customer_name": f"客户{i % 97}",
             "updated_at": T0 + timedelta(milliseconds=i)}
            for i in range(ROWS)])
    return "annuity_plan"


@pytest.fixture(scope="module")
def big(admin: sa.Engine) -> str:
    """`big_plan`: 100,000 rows of ~300 bytes (30 MB), more than socket buffers hold."""
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE digits (d INT)")
        conn.exec_driver_sql("INSERT INTO digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)")
        conn.exec_driver_sql(
            "CREATE TABLE big_plan (plan_code INT PRIMARY KEY, plan_name VARCHAR(300))")
        conn.exec_driver_sql("""
            INSERT INTO big_plan
            SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d, REPEAT('年', 100)
            FROM digits a, digits b, digits c, digits e, digits f""")
    return "big_plan"


# ---------------------------------------------------------------- streaming


def test_mysql_streams_in_batches_with_a_server_side_cursor(db: sa.URL, plans: str) -> None:
    src = LegacyMySQLSource(make_spec(plans), settings_for(db), MySQLPool(), batch_size=3000)
    cursors: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM `annuity_plan`" in statement:
            cursors.append(type(cursor).__name__)

    sa.event.listen(src.engine, "before_cursor_execute", spy)
    batches = list(src.open().iter_batches(None))
    assert [len(b) for b in batches] == [3000] * 6 + [2000]
    assert cursors == ["SSCursor"]  # unbuffered: rows are read as they are consumed
    rows = {r[0]: r for b in batches for r in b}
    assert len(rows) == ROWS
    assert rows["AP000007"] == ("AP000007", "企业年金计划7", "DC", "客户7")
    assert src.columns == ["年金计划号", "计划名称", "计划类型", "客户名称"]
    assert src.describe() == f"mysql://{db.username}@{db.host}:{db.port}/{db.database} " \
                             "table annuity_plan"


def test_mysql_session_is_read_only(db: sa.URL, plans: str) -> None:
    engine = get_engine(settings_for(db), MySQLPool())
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as info:
        conn.exec_driver_sql("UPDATE annuity_plan SET plan_type = 'X' WHERE plan_code = 'AP000001'")
    assert info.value.orig.args[0] == 1792  # type: ignore[union-attr]  # READ ONLY transaction


def test_mysql_sources_share_one_pool(db: sa.URL, plans: str) -> None:
    pool = MySQLPool(pool_size=2, max_overflow=0)
    a = LegacyMySQLSource(make_spec(plans), settings_for(db), pool, batch_size=10)
    b = LegacyMySQLSource(make_spec(plans, cursor="updated_at"), settings_for(db), pool,
                          batch_size=10)
    assert a.engine is b.engine
    a.open()
    b.open()
    a.close()  # a legacy source never disposes the shared engine
    assert len(read(b, T0 + timedelta(milliseconds=ROWS - 2))) == 2


# ---------------------------------------------------------------- the incremental window


def test_mysql_incremental_since_is_inclusive_to_the_microsecond(db: sa.URL, plans: str) -> None:
    src = LegacyMySQLSource(make_spec(plans, cursor="updated_at"), settings_for(db), MySQLPool(),
                            batch_size=5000)
    last = T0 + timedelta(milliseconds=ROWS - 1)
    rows = read(src, last)
    assert rows == [(f"AP{ROWS - 1:06}", f"企业年金计划{ROWS - 1}", "DC", "客户17", last)]
    assert read(src, last + timedelta(microseconds=1)) == []
    assert len(read(src, last - timedelta(microseconds=1))) == 1
    assert len(read(src, last - timedelta(milliseconds=10))) == 11
    assert len(read(src, None)) == ROWS
    mark = src.parse_watermark(last.isoformat())
    assert mark == last and type(mark) is datetime and mark.microsecond == last.microsecond
    assert src.count_null_cursor() == 0


def test_mysql_where_is_used_verbatim(db: sa.URL, plans: str) -> None:
    where = "updated_at >= :last_synced_at AND plan_type = 'DB' AND plan_name LIKE '企业%'"
    src = LegacyMySQLSource(make_spec(plans, cursor="updated_at", where=where), settings_for(db),
                            MySQLPool(), batch_size=5000)
    rows = read(src, T0 + timedelta(milliseconds=ROWS - 10))
    assert sorted(r[0] for r in rows) == [f"AP{i:06}" for i in range(ROWS - 10, ROWS, 2)]
    assert len(read(src)) == ROWS  # a full read ignores it


def test_mysql_missing_cursor_column_warns_and_reads_in_full(db: sa.URL, plans: str) -> None:
    src = LegacyMySQLSource(make_spec(plans, cursor="modified_at"), settings_for(db), MySQLPool(),
                            batch_size=5000)
    src.open()
    assert src.cursor_column is None
    assert src.warnings == [
        "source table annuity_plan has no column modified_at: syncing in full"]
    rows = read(src, T0 + timedelta(days=1))
    assert len(rows) == ROWS and len(rows[0]) == 4


@pytest.mark.parametrize(("ddl", "zero"), [
    pytest.param("DATETIME(6)", "0000-00-00 00:00:00.000000", id="datetime6"),
    pytest.param("DATETIME", "0000-00-00 00:00:00", id="datetime"),
    pytest.param("TIMESTAMP NULL", "0000-00-00 00:00:00", id="timestamp"),
    pytest.param("DATE", "0000-00-00", id="date"),
])
def test_mysql_null_and_zero_date_cursors_are_counted(
        db: sa.URL, admin: sa.Engine, ddl: str, zero: str) -> None:
    name = f"cursor_{ddl.split('(')[0].split()[0].lower()}{'6' if '(6)' in ddl else ''}"
    with admin.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")  # allow zero dates
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INT PRIMARY KEY, u {ddl})")
        conn.exec_driver_sql(f"INSERT INTO {name} VALUES (1, '2024-01-02'), (2, NULL), "
                             f"(3, '{zero}'), (4, '0000-00-00'), (5, '2024-02-30')")
    src = LegacyMySQLSource(make_spec(name, [("id", "id"), ("u", "u")], cursor="u"),
                            settings_for(db), MySQLPool(), batch_size=10)
    assert src.count_null_cursor() == 4  # NULL, two zero dates, and the invalid date stored as zero
    rows = sorted(read(src))
    # a TIMESTAMP value is an instant (aware, UTC); its cursor stays naive, in source terms
    mapped = rows[0][1]
    if ddl.startswith("TIMESTAMP"):
        assert mapped.tzinfo is UTC
        mapped = mapped.replace(tzinfo=None)
    assert mapped == rows[0][2] and isinstance(rows[0][2], date)
    # the mapped value keeps the zero date as text (the transform rejects it); the cursor is None
    assert [r[1] for r in rows[1:]] == [None, zero, zero, zero]
    assert [r[2] for r in rows[1:]] == [None, None, None, None]
    assert [r[0] for r in read(src, date(2000, 1, 1))] == [1]


# ---------------------------------------------------------------- type traps


def test_mysql_type_traps_arrive_as_driver_values(db: sa.URL, admin: sa.Engine) -> None:
    text_value = "tab\there\nnl \\ \\N 'single' \"double\" `tick` 😀 𠀀 年金\r\n"
    with admin.begin() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = ''")
        conn.exec_driver_sql("""
            CREATE TABLE traps (
                id INT PRIMARY KEY, zero_d DATE, zero_dt DATETIME, bad_d DATE,
                flag TINYINT(1), flag2 TINYINT(1), big BIGINT UNSIGNED, amount DECIMAL(20,6),
                dt6 DATETIME(6), ts TIMESTAMP NULL, doc JSON, kind ENUM('DB','DC'),
                tags SET('a','b','c'), bit1 BIT(1), txt TEXT, vc VARCHAR(50), t TIME, y YEAR,
                bin VARBINARY(4)
            ) CHARACTER SET utf8mb4""")
        conn.execute(sa.text("""
            INSERT INTO traps VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '2024-02-30', 1, 2,
                18446744073709551615, 12345678901234.123456, '2024-01-02 03:04:05.000001',
                '2024-01-02 03:04:05', '{"k": [1, "年"]}', 'DC', 'a,c', b'1', :txt, :vc,
                '-01:02:03', 2024, x'00ff0a5c')"""), {"txt": text_value, "vc": "😀𠀀"})
    cols = ["zero_d", "zero_dt", "bad_d", "flag", "flag2", "big", "amount", "dt6", "ts", "doc",
            "kind", "tags", "bit1", "txt", "vc", "t", "y", "bin"]
    src = LegacyMySQLSource(make_spec("traps", [("id", "id"), *((c, c) for c in cols)]),
                            settings_for(db), MySQLPool(), batch_size=10)
    [row] = read(src)
    got = dict(zip(["id", *cols], row, strict=True))
    expected = {
        "id": 1,
        "zero_d": "0000-00-00",  # zero dates arrive as text, never a crash
        "zero_dt": "0000-00-00 00:00:00",
        "bad_d": "0000-00-00",  # MariaDB stores an invalid date as a zero date
        "flag": 1, "flag2": 2,  # TINYINT(1) is an int: 2 is possible
        "big": 18446744073709551615,
        "amount": Decimal("12345678901234.123456"),
        "dt6": datetime(2024, 1, 2, 3, 4, 5, 1),
        "ts": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),  # an instant: read in a UTC session
        "doc": '{"k": [1, "年"]}',  # JSON is text
        "kind": "DC",
        "tags": "a,c",  # SET is comma-separated text
        "bit1": b"\x01",  # BIT is bytes
        "txt": text_value,
        "vc": "😀𠀀",
        "t": timedelta(hours=-1, minutes=-2, seconds=-3),
        "y": 2024,
        "bin": b"\x00\xff\n\\",
    }
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_mysql_chinese_identifiers(db: sa.URL, admin: sa.Engine) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE `组织架构` (`组织代码` VARCHAR(10) PRIMARY KEY, "
                             "`组织 名称` VARCHAR(50), `select` INT) CHARACTER SET utf8mb4")
        conn.exec_driver_sql("INSERT INTO `组织架构` VALUES ('ORG1', '总部', 7)")
    src = LegacyMySQLSource(
        make_spec("组织架构",
                  [("组织代码", "组织代码"), ("组织 名称", "组织名称"), ("select", "s")]),
        settings_for(db), MySQLPool(), batch_size=10)
    assert read(src) == [("ORG1", "总部", 7)]


def test_sql_source_with_a_mysql_url(db: sa.URL, plans: str) -> None:
    spec = make_spec(plans, cursor="updated_at", source_type="sql",
                     url=db.render_as_string(hide_password=False))
    src = open_source(spec, Settings(_env_file=None), MySQLPool(), 7000)  # type: ignore[call-arg]
    try:
        assert [len(b) for b in src.iter_batches(None)] == [7000, 7000, 6000]
        assert isinstance(src, SqlSource) and src.source_type == "sql"
    finally:
        src.close()


# ---------------------------------------------------------------- failures, classified


def test_mysql_missing_source_column_is_a_query_failure(db: sa.URL, plans: str) -> None:
    spec = make_spec(plans, [("plan_code", "a"), ("plan_nmae", "b")])
    with pytest.raises(QueryFailure) as info:
        LegacyMySQLSource(spec, settings_for(db), MySQLPool(), batch_size=10).open()
    assert "annuity_plan has no column plan_nmae" in str(info.value)
    assert not info.value.transient


def test_mysql_unknown_table_is_a_query_failure(db: sa.URL) -> None:
    src = LegacyMySQLSource(make_spec("annuity_plans"), settings_for(db), MySQLPool(),
                            batch_size=10)
    with pytest.raises(QueryFailure) as info:
        src.open()
    assert str(info.value) == (
        f"legacy_mysql annuity_plans on {db.username}@{db.host}:{db.port}/{db.database}: "
        "source table annuity_plans not found")


@pytest.mark.parametrize(("where", "what"), [
    pytest.param("updated_att >= :last_synced_at", "unknown column", id="unknown-column"),
    pytest.param("updated_at >= :last_synced_at AND AND", "SQL syntax error", id="syntax"),
])
def test_mysql_bad_where_is_a_query_failure(db: sa.URL, plans: str, where: str,
                                            what: str) -> None:
    src = LegacyMySQLSource(make_spec(plans, cursor="updated_at", where=where), settings_for(db),
                            MySQLPool(), batch_size=10)
    with pytest.raises(QueryFailure) as info:
        read(src, T0)
    assert f"legacy_mysql annuity_plan on {db.username}@" in str(info.value)
    assert f": {what} (10" in str(info.value)


def test_mysql_connection_refused_fails_fast(db: sa.URL, plans: str) -> None:
    src = LegacyMySQLSource(make_spec(plans), settings_for(db, legacy_mysql_host="127.0.0.1",
                                                           legacy_mysql_port=1),
                            MySQLPool(connect_timeout=2), batch_size=10)
    started = time.monotonic()
    with pytest.raises(ConnectionFailure) as info:
        src.open()
    assert time.monotonic() - started < 5
    assert str(info.value).startswith(
        f"legacy_mysql annuity_plan on {db.username}@127.0.0.1:1/{db.database}: cannot connect "
        "(2003 ")
    assert info.value.transient and info.value.error_class == "connection"


def test_mysql_not_configured_names_the_variable() -> None:
    with pytest.raises(NotConfigured, match="WDH_LEGACY_MYSQL_HOST"):
        open_source(make_spec("annuity_plan"), Settings(_env_file=None),  # type: ignore[call-arg]
                    MySQLPool(), 10)


def test_mysql_read_timeout_is_a_connection_failure(db: sa.URL, admin: sa.Engine) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE slow (id INT PRIMARY KEY, u DATETIME)")
        conn.exec_driver_sql("INSERT INTO slow VALUES (1, '2024-01-01')")
    where = "SLEEP(3) = 0 AND u >= :last_synced_at"
    src = LegacyMySQLSource(make_spec("slow", [("id", "id")], cursor="u", where=where),
                            settings_for(db), MySQLPool(read_timeout=1), batch_size=10)
    started = time.monotonic()
    with pytest.raises(ConnectionFailure) as info:
        read(src, datetime(2000, 1, 1))
    assert time.monotonic() - started < 2.9
    assert ": read timed out (2013 Lost connection to MySQL server during query (timed out))" \
        in str(info.value)


def test_mysql_killed_mid_stream_is_a_connection_failure(db: sa.URL, admin: sa.Engine,
                                                         big: str) -> None:
    src = LegacyMySQLSource(make_spec(big, [("plan_code", "code"), ("plan_name", "name")]),
                            settings_for(db), MySQLPool(), batch_size=100)
    seen = 0
    with pytest.raises(ConnectionFailure) as info:
        for batch in src.iter_batches(None):
            if seen == 0:
                with admin.connect() as conn:
                    ids = conn.exec_driver_sql(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE info LIKE 'SELECT `plan_code`, `plan_name` %%'").scalars().all()
                    assert len(ids) == 1
                    conn.exec_driver_sql(f"KILL CONNECTION {ids[0]}")
            seen += len(batch)
    assert 0 < seen < 100_000
    assert ": connection lost mid-stream (2013 Lost connection to MySQL server during query)" \
        in str(info.value)
    assert len(read(src)) == 100_000  # the pool recovers: a retry reads from scratch


def test_mysql_connection_cut_by_a_proxy_mid_stream(db: sa.URL, big: str) -> None:
    proxy = CuttingProxy((db.host or "127.0.0.1", db.port or 3306), limit=300_000)
    try:
        src = LegacyMySQLSource(
            make_spec(big, [("plan_code", "code"), ("plan_name", "name")]),
            settings_for(db, legacy_mysql_host="127.0.0.1", legacy_mysql_port=proxy.port),
            MySQLPool(), batch_size=500)
        seen: list[int] = []
        with pytest.raises(ConnectionFailure) as info:
            for batch in src.iter_batches(None):
                seen.append(len(batch))
        assert proxy.cut.is_set()
        assert 0 < sum(seen) < 100_000
        assert "connection lost mid-stream (2013" in str(info.value)
        assert len(read(src)) == 100_000  # the next connection passes: the retry reads it all
    finally:
        dispose_engines()
        proxy.close()


def test_mysql_early_stop_does_not_drain_the_table(db: sa.URL, big: str) -> None:
    src = LegacyMySQLSource(make_spec(big, [("plan_code", "code"), ("plan_name", "name")]),
                            settings_for(db), MySQLPool(), batch_size=100)
    gen = src.iter_batches(None)
    assert len(next(gen)) == 100
    started = time.monotonic()
    gen.close()  # discards the connection instead of reading 30 MB to the end
    assert time.monotonic() - started < 1
    assert src.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len(next(src.iter_batches(None))) == 100


# ---------------------------------------------------------------- the password, nowhere


@pytest.fixture(scope="module")
def pw_user(db: sa.URL, admin: sa.Engine, plans: str) -> Iterator[sa.URL]:
    """A MariaDB user with a distinctive password, SELECT on annuity_plan only."""
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{PW_USER}'@'%%'")
            conn.exec_driver_sql(f"CREATE USER '{PW_USER}'@'%%' IDENTIFIED BY '{SECRET}'")
            conn.exec_driver_sql(
                f"GRANT SELECT ON `{db.database}`.`annuity_plan` TO '{PW_USER}'@'%%'")
    except sa.exc.DBAPIError as exc:
        pytest.skip(f"cannot create a MySQL user here: {exc.orig}")
    try:
        yield db.set(username=PW_USER, password=SECRET)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{PW_USER}'@'%%'")


def test_password_never_appears(pw_user: sa.URL, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    settings = settings_for(pw_user)
    ok = LegacyMySQLSource(make_spec("annuity_plan", cursor="updated_at"), settings, MySQLPool(),
                           batch_size=5000)
    assert len(read(ok, T0)) == ROWS
    texts += [ok.describe(), ok.where_text, repr(ok.engine), str(ok.engine.url)]
    assert ok.describe().startswith(f"mysql://{PW_USER}@")

    failures: list[tuple[TableSpec, Settings, type[Exception], str]] = [
        (make_spec("organization"), settings, QueryFailure, "access denied (1142"),  # no grant
        (make_spec("annuity_plan", [("plan_code", "a"), ("secret_col", "b")]), settings,
         QueryFailure, "no column secret_col"),
        (make_spec("annuity_plan", cursor="updated_at", where="nope >= :last_synced_at"),
         settings, QueryFailure, "unknown column"),
        (make_spec("annuity_plan"),
         settings_for(pw_user, legacy_mysql_password="Wrong-" + SECRET), QueryFailure,
         "access denied (1045"),
        (make_spec("annuity_plan"), settings_for(pw_user, legacy_mysql_port=1),
         ConnectionFailure, "cannot connect (2003"),
    ]
    for spec, st, kind, what in failures:
        src = LegacyMySQLSource(spec, st, MySQLPool(connect_timeout=2), batch_size=10)
        with pytest.raises(kind) as info:
            read(src, T0)
        assert what in str(info.value)
        texts += [str(info.value), info.value.hint, repr(info.value), src.describe()]
        texts += [str(e) for e in _chain(info.value)]
    # the `sql` flavour, with the password inside the configured URL
    url = pw_user.render_as_string(hide_password=False)
    sql_src = SqlSource.from_spec(make_spec("missing_table", source_type="sql", url=url),
                                  batch_size=100)
    try:
        with pytest.raises(QueryFailure) as info:
            sql_src.open()
        texts += [str(info.value), sql_src.describe(), sql_src.where_text]
    finally:
        sql_src.close()
    texts.append(caplog.text)
    assert texts and all(SECRET not in t for t in texts)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def test_cancelling_a_connection_that_has_ended_is_quiet(
        mysql_db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A signal can come as the read's connection closes: KILL QUERY then names a connection
    the server no longer has, which is nothing left to cancel, not a failure to report (no
    warning, no traceback); a cancel that really fails still warns."""
    from refsync.sources.mysql import kill_query

    engine = sa.create_engine(mysql_db_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            ended = int(conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one())
        with caplog.at_level(logging.DEBUG, logger="refsync.sources.mysql"):
            assert kill_query(engine, ended, "here") is False
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "has ended" in caplog.text
    finally:
        engine.dispose()
    unreachable = sa.create_engine(sa.make_url(mysql_db_url).set(port=1), poolclass=sa.NullPool)
    try:
        caplog.clear()
        assert kill_query(unreachable, ended, "here") is False
        assert "could not cancel" in caplog.text
    finally:
        unreachable.dispose()
