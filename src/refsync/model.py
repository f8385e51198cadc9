"""Plain data passed between the layers: target column descriptions, results, and the
protocol a source implements (targets share one implementation, targets/base.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

Row = tuple[Any, ...]
Batch = list[Row]

ColumnKind = Literal[
    "text", "integer", "numeric", "float", "boolean", "date", "timestamp", "timestamptz",
    "time", "json", "uuid", "bytes", "other",
]


@dataclass(frozen=True)
class ColumnInfo:
    """A target column as introspected: what a value must satisfy to be written there."""

    name: str
    kind: ColumnKind
    nullable: bool = True
    max_length: int | None = None  # varchar(n) / char(n)
    precision: int | None = None  # numeric(p, s)
    scale: int | None = None
    int_bits: int | None = None  # 16, 32, 64 for smallint / integer / bigint
    type_sql: str = ""  # the type as the database spells it, for staging tables and messages


Status = Literal["ok", "unchanged", "failed", "skipped", "guarded", "disabled", "interrupted"]


@dataclass
class Reject:
    key: dict[str, Any]
    column: str
    value: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class RowChanges:
    """What applying a table's staged rows does to its target rows: the diff's counts, and
    a table's result (which adds the rows it read and rejected)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    promoted: int = 0

    @property
    def changes(self) -> int:
        return self.inserted + self.updated + self.promoted + self.deleted


@dataclass(kw_only=True)
class DiffCounts(RowChanges):
    """What applying the staged rows would do to the target."""

    authoritative_before: int = 0


# a table's row counts: TableResult's fields, sync_runs' columns, --json keys, metric labels
COUNT_FIELDS = ("read", "inserted", "updated", "deleted", "unchanged", "promoted", "rejected")


@dataclass
class TableResult(RowChanges):
    """The outcome of one table in one run; what `--json` prints and `sync_runs` stores."""

    name: str
    target: str
    source_type: str
    mode: str
    incremental: bool
    status: Status = "ok"
    error_class: str | None = None
    error: str | None = None
    hint: str | None = None
    read: int = 0
    rejected: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    duration_s: float = 0.0
    watermark: str | None = None
    null_cursor_rows: int | None = None
    warnings: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # the source server's clock when this run's read began (stored with the run: a later run
    # compares the table's last change with it, see `state.LastRun`)
    source_snapshot: datetime | None = None

    JSON_KEYS = (
        "name", "target", "source_type", "mode", "incremental", "status", "error_class", "error",
        *COUNT_FIELDS, "rejects", "attempts", "duration_s", "watermark",
    )

    def take_counts(self, counts: RowChanges) -> None:
        """What the diff found, as this table's counts (`read` and `rejected` come from the
        read)."""
        for change in fields(RowChanges):
            setattr(self, change.name, getattr(counts, change.name))

    def as_json(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in self.JSON_KEYS}
        doc["duration_s"] = round(self.duration_s, 3)
        if self.hint:
            doc["hint"] = self.hint
        if self.null_cursor_rows is not None:
            doc["null_cursor_rows"] = self.null_cursor_rows
        if self.warnings:
            doc["warnings"] = list(self.warnings)
        return doc

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "skipped", "guarded", "interrupted")


def exit_code(interrupted_by: int | None, failed: bool) -> int:
    """A command's exit code: 128 + the signal that stopped it, else 1 when something
    failed, else 0."""
    if interrupted_by:
        return 128 + interrupted_by
    return 1 if failed else 0


@dataclass
class RunResult:
    run_key: str
    plan_only: bool
    tables: list[TableResult] = field(default_factory=list)
    disabled_reason: str | None = None
    interrupted_by: int | None = None  # the signal that stopped the run

    @property
    def exit_code(self) -> int:
        return exit_code(self.interrupted_by, any(t.failed for t in self.tables))

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "run_key": self.run_key,
            "plan_only": self.plan_only,
            "exit_code": self.exit_code,
            "tables": [t.as_json() for t in self.tables],
        }
        if self.disabled_reason:
            doc["disabled"] = self.disabled_reason
        return doc


# ---------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Chunk:
    """The one unit a source hands the pipeline: a stretch of the table (a key range where
    the source can tell), as COPY text its server made and checked (every row fits its
    target column, so it is staged as it is), or as source values for the value rules
    (`transform.RowConverter`, which alone decides what is rejected and why)."""

    rows: int
    copy_text: bytes | None = None  # UTF-8 COPY text lines, joined by newlines
    batch: Batch | None = None  # source values, each row with its cursor value last
    high: Any = None  # the largest cursor value in the chunk


class PhasedProgress:
    """A caller's progress object, with `phase` optional: a bar may name what a table does
    after its read ("checking", "applying"); plain progress objects need not."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._phase = getattr(inner, "phase", None)

    def start(self, table: str, total: int | None) -> None:
        self._inner.start(table, total)

    def advance(self, table: str, rows: int) -> None:
        self._inner.advance(table, rows)

    def finish(self, table: str, result: TableResult) -> None:
        self._inner.finish(table, result)

    def phase(self, table: str, name: str) -> None:
        if self._phase is not None:
            self._phase(table, name)
