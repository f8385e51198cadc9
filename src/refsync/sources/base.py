"""What a source is and what it can do, said with Protocols (no probing with getattr).

Every source reads its rows (`Source.reading` → `Read.chunks`) and knows its cursor. Some can
do more, and say so in the one value that decides a table's read path, `ReadPlan`:

- `ReadPlan.path` is `copy_ranges` or `copy_stream` when the source's server formats and
  checks COPY text itself (MySQL into PostgreSQL): in key ranges, or in one streaming
  statement where there is no one-column key;
- `ReadPlan.digests` is set when the source and the target can both digest the table inside
  their databases (DESIGN 4.6): its `Read` is then a `DigestRead`, whose digests are computed
  inside the same snapshot the rows are read in.

A `Read` belongs to the one thread that opened it (`threads.Session`): its connection is
never touched by another (DESIGN 4.9).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from refsync.interrupts import Stoppable
from refsync.model import Chunk, ColumnInfo
from refsync.watermark import OpenWrites

if TYPE_CHECKING:
    from refsync.digest import BucketDigest, DigestPlan
    from refsync.sources.mysql_read import CopyPlan

ReadPath = Literal["values", "copy_ranges", "copy_stream"]


@dataclass(frozen=True)
class ReadPlan:
    """How one table's rows are read this attempt: chosen once, before the read starts."""

    path: ReadPath = "values"
    copy: CopyPlan | None = None  # the server's COPY text rules, on a copy path
    digests: DigestPlan | None = None  # both databases can digest the table
    # the source's own unique key holds each configured key once and the key reaches the
    # target as it is: no read can stage a key twice (the check is skipped)
    unique_keys: bool = False


@dataclass(frozen=True)
class Selection:
    """The part of a table a read is limited to: the rows of the digest buckets that differ,
    as the comparison found them."""

    plan: DigestPlan
    differing: list[int]


class Read(Protocol):
    """One read of a source (inside one snapshot where the source has them)."""

    snapshot_utc: datetime | None
    """The source server's clock when the read began (None: this machine's)."""
    open_writes: OpenWrites | None
    """The transactions writing on the source as the read began (None: it cannot tell)."""

    def chunks(self, only: Selection | None = None) -> Iterator[Chunk]:
        """The rows, or those of `only`, in chunks."""
        ...


@runtime_checkable
class DigestRead(Read, Protocol):
    """A read whose snapshot can also digest the table (the rows it would read)."""

    def digests(self, plan: DigestPlan, whole: bool) -> dict[int, BucketDigest]:
        """Per bucket (rows, xor); `whole`: the table as one part."""
        ...

    def ordered_ranges(self, plan: DigestPlan) -> DigestPlan | None:
        """`plan` with the key-range bounds this source orders as the target does, or None
        where it cannot compare key ranges (see `digest.KeyRanges`)."""
        ...

    def key_hashes(self, plan: DigestPlan, keys: Sequence[Any]) -> dict[Any, int]:
        """Key -> row hash of the rows whose one-column key is among `keys` (the target's
        sample, `table_sync.change_sample`)."""
        ...

    def largest_cursor(self) -> Any:
        """The largest cursor value of the whole table (the watermark of a read that
        compared every part equal and read nothing)."""
        ...


class Source(Protocol):
    """A table's rows and its incremental cursor."""

    source_type: str
    columns: list[str]
    """Target column names, in the order each row holds them."""
    cursor_column: str | None
    """Source column read incrementally; when set, each row carries its value last."""
    warnings: list[str]
    changed_at: datetime | None
    """When the source table last changed, where its server tells (a hint)."""

    def describe(self) -> str:
        """Where the rows come from, for logs and errors; never a password."""
        ...

    def read_plan(self, columns: list[ColumnInfo], *, copy_text: bool,
                  source_timezone: str, target_rows: int | None) -> ReadPlan:
        """The read path for target `columns` (`copy_text`: the target stages COPY text;
        `target_rows`: the target's row estimate, where digests are possible)."""
        ...

    def reading(self, since: Any | None, plan: ReadPlan) -> AbstractContextManager[Read]:
        """Open one read: all rows when `since` is None, else cursor >= since."""
        ...

    def estimated_rows(self) -> int | None:
        """Cheap server statistics for a progress bar, where the source has them."""
        ...


    def count_null_cursor(self) -> int:
        """Rows an incremental read can never see (NULL or zero-date cursor)."""
        ...

    def parse_watermark(self, text: str) -> Any:
        """A stored watermark back into the cursor column's own type."""
        ...

    def stoppable(self) -> Stoppable:
        """What a stop (signal, deadline) does to a read in flight."""
        ...

    def close(self) -> None: ...


class RowsRead:
    """A `Read` over rows a source yields by itself (no digests to share its snapshot)."""

    def __init__(self, rows: Iterator[Chunk], snapshot_utc: datetime | None = None) -> None:
        self._rows = rows
        self.snapshot_utc = snapshot_utc
        self.open_writes: OpenWrites | None = None

    def chunks(self, only: Selection | None = None) -> Iterator[Chunk]:
        assert only is None, "a plain read cannot be limited to digest buckets"
        return self._rows
