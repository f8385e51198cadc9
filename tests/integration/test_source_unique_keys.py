"""The duplicate-key check (DESIGN 4.5) is skipped only where the source's primary key rules
duplicates out: every key column the primary key holds reaches the target as it is."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from test_mysql_source import settings_for

from refsync.config import MySQLPool, TableSpec
from refsync.model import ColumnInfo
from refsync.sources import LegacyMySQLSource, dispose_engines

pytestmark = pytest.mark.integration

VARCHAR = ColumnInfo("code", "text", max_length=20, type_sql="varchar(20)")
KIND = ColumnInfo("kind", "text", max_length=20, type_sql="varchar(20)")

# (source table DDL, the config's key, the target key column, whether the check is skipped)
SHAPES = {
    "varchar-pk": ("code VARCHAR(20) PRIMARY KEY, kind VARCHAR(20)", ["code"], VARCHAR, True),
    "int-pk": ("code INT PRIMARY KEY, kind VARCHAR(20)", ["code"],
               ColumnInfo("code", "integer", int_bits=64, type_sql="bigint"), True),
    "bigint-unsigned-pk": ("code BIGINT UNSIGNED PRIMARY KEY, kind VARCHAR(20)", ["code"],
                           ColumnInfo("code", "integer", int_bits=64, type_sql="bigint"), True),
    "ci-collation-pk": ("code VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY, "
                        "kind VARCHAR(20)", ["code"], VARCHAR, True),
    "composite-pk-in-key": ("code VARCHAR(20), kind VARCHAR(20), PRIMARY KEY (code, kind)",
                            ["code", "kind"], VARCHAR, True),
    "pk-within-key": ("code VARCHAR(20) PRIMARY KEY, kind VARCHAR(20)", ["code", "kind"],
                      VARCHAR, True),
    # duplicates possible, or not ruled out: checked
    "no-key": ("code VARCHAR(20) NOT NULL, kind VARCHAR(20), KEY (code)", ["code"], VARCHAR,
               False),
    "composite-pk-wider-than-key": ("code VARCHAR(20), kind VARCHAR(20), "
                                    "PRIMARY KEY (code, kind)", ["code"], VARCHAR, False),
    "pk-on-another-column": ("id INT PRIMARY KEY, code VARCHAR(20), kind VARCHAR(20)", ["code"],
                             VARCHAR, False),
    # two keys MySQL holds apart can meet in the target
    "gbk-text": ("code VARCHAR(20) CHARACTER SET gbk PRIMARY KEY, kind VARCHAR(20)", ["code"],
                 VARCHAR, False),  # an invalid sequence converts to '?'
    "into-char": ("code VARCHAR(20) COLLATE utf8mb4_nopad_bin PRIMARY KEY, kind VARCHAR(20)",
                  ["code"], ColumnInfo("code", "text", max_length=20, type_sql="character(20)"),
                  False),  # 'a' and 'a ' are two keys in MySQL, one in char(20)
    "text-into-integer": ("code VARCHAR(20) PRIMARY KEY, kind VARCHAR(20)", ["code"],
                          ColumnInfo("code", "integer", int_bits=64, type_sql="bigint"),
                          False),  # '1' and '01'
    "decimal-pk": ("code DECIMAL(10,2) PRIMARY KEY, kind VARCHAR(20)", ["code"],
                   ColumnInfo("code", "numeric", precision=10, scale=1,
                              type_sql="numeric(10,1)"), False),  # rounded to one place
}


@pytest.fixture
def db(mysql_db_url: str) -> Iterator[sa.URL]:
    yield sa.engine.make_url(mysql_db_url)
    dispose_engines()
    gc.collect()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_check_is_skipped_only_where_the_primary_key_rules_duplicates_out(
        db: sa.URL, shape: str) -> None:
    ddl, key, key_info, skipped = SHAPES[shape]
    engine = sa.create_engine(db, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS keyed")
        conn.exec_driver_sql(f"CREATE TABLE keyed ({ddl}) CHARACTER SET utf8mb4")
    engine.dispose()
    spec = TableSpec.model_validate({
        "name": "keyed", "target_table": "keyed", "source_type": "legacy_mysql",
        "source_config": {"table": "keyed", "columns": [{"source": "code", "target": "code"},
                                                         {"source": "kind", "target": "kind"}]},
        "primary_key": key})
    source = LegacyMySQLSource(spec, settings_for(db), MySQLPool(), batch_size=100).open()
    try:
        for copy_text in (True, False):  # the server's COPY text, or source values
            plan = source.read_plan([key_info, KIND], copy_text=copy_text,
                                    source_timezone="UTC", target_rows=None)
            assert plan.unique_keys is skipped, (shape, copy_text)
    finally:
        source.close()
