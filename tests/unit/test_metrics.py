"""The textfile every sync and verify rewrites (DESIGN 2.2a): which lines a run replaces and
which it keeps. The real early stops are in tests/integration/test_operations.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from refsync.alerting import RunMetrics, write_verify_metrics
from refsync.model import RunResult, TableResult
from refsync.verify import TableVerify, VerifyReport

NOW = datetime(2026, 12, 7, 1, 0, 0, tzinfo=UTC)
BEFORE = """\
# HELP refsync_up 1 if the table's last run succeeded, else 0.
# TYPE refsync_up gauge
refsync_up{table="a"} 1
refsync_up{table="b"} 1
# HELP refsync_run_last_success_timestamp_seconds When the last sync run that exited 0 ended.
# TYPE refsync_run_last_success_timestamp_seconds gauge
refsync_run_last_success_timestamp_seconds 1700000000
# HELP other_exporter_thing Someone else's line.
# TYPE other_exporter_thing gauge
other_exporter_thing 42
"""


def samples(path: Path) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
            for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")}


def test_a_run_whose_config_could_not_be_read_downs_every_known_table(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text(BEFORE, encoding="utf-8")
    assert RunMetrics(path).write(2, now=NOW)  # nothing known of the run but its exit code
    assert samples(path) == {
        'refsync_up{table="a"}': "0", 'refsync_up{table="b"}': "0",
        "refsync_run_last_exit_code": "2",
        "refsync_run_last_timestamp_seconds": str(int(NOW.timestamp())),
        "refsync_run_last_success_timestamp_seconds": "1700000000",
        "other_exporter_thing": "42"}


def test_an_unknown_table_name_downs_no_table(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text(BEFORE, encoding="utf-8")
    assert RunMetrics(path, planned=[]).write(2, now=NOW)
    assert samples(path)['refsync_up{table="a"}'] == "1"


def test_a_disabled_sync_writes_only_the_run_level_series(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text(BEFORE, encoding="utf-8")
    result = RunResult(run_key="k", plan_only=False, disabled_reason="enabled: false")
    assert RunMetrics(path, planned=["a", "b"], result=result).write(0, now=NOW)
    got = samples(path)
    assert (got['refsync_up{table="a"}'], got["refsync_run_last_exit_code"]) == ("1", "0")
    assert got["refsync_run_last_success_timestamp_seconds"] == str(int(NOW.timestamp()))


def test_a_plan_writes_no_metrics(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    result = RunResult(run_key="k", plan_only=True, tables=[TableResult(
        name="a", target="s.a", source_type="sql", mode="upsert", incremental=False)])
    assert not RunMetrics(path, planned=["a"], result=result).write(0, now=NOW)
    assert not path.exists()


def test_an_unwritable_metrics_file_never_fails_the_run(tmp_path: Path) -> None:
    assert not RunMetrics(tmp_path / "missing" / "m.prom", planned=["a"]).write(1, now=NOW)


def test_verify_drops_the_line_of_a_table_it_could_not_compare(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text(BEFORE, encoding="utf-8")
    report = VerifyReport(tables=[
        TableVerify(name="a", target="s.a", source_type="legacy_mysql", status="differs",
                    differ=1, missing=2, extra=3),
        TableVerify(name="b", target="s.b", source_type="legacy_mysql", status="in_step",
                    differ=0, missing=0, extra=0)])
    assert write_verify_metrics(path, report, now=NOW)
    report = VerifyReport(tables=[TableVerify(
        name="b", target="s.b", source_type="legacy_mysql", status="failed",
        error_class="connection", error="refused")])
    assert write_verify_metrics(path, report, now=NOW)
    got = samples(path)
    assert {k: v for k, v in got.items() if k.startswith("refsync_verify")} == {
        'refsync_verify_differing_rows{table="a"}': "6",
        "refsync_verify_last_exit_code": "1",
        "refsync_verify_last_timestamp_seconds": str(int(NOW.timestamp()))}
    assert got['refsync_up{table="b"}'] == "1" and got["other_exporter_thing"] == "42"
