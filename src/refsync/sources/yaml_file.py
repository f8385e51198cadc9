"""`source_type: config_file`: a versioned YAML file of reference rows (DESIGN 3.1, 3.2, 4.7).

The file holds `schema_version`, `description` and `data` (a list of mappings; empty or null:
no rows). A missing file is `FileMissing` and another `schema_version` is
`SchemaVersionMismatch` (the engine skips the table with a warning); anything else wrong with
it is a `ConfigError` naming the file (and the line, where there is one).

The file is bounded and read strictly:
- a file over `max_yaml_bytes` is refused before a byte of it is parsed;
- it is read as a stream of YAML events (libyaml where PyYAML has it), one row at a time, so
  memory stays flat whatever its size and a signal is handled between two events;
- at most `MAX_ALIAS_EXPANSIONS` alias expansions per document, each alias counting as
  many as its anchor holds (an alias bomb is refused after a few hundred events), and at
  most `MAX_DEPTH` levels of nesting;
- a key twice in one mapping is an error with its line; a value that is not a scalar (a
  list, a mapping, `!!set`, `!!binary`) is an `Unfit` value, whose row is rejected;
- a scalar keeps its exact source text (`0701`, `1.10`, `12:30`, `on`); typed target columns
  parse that text by their own type. Plain `~`, `null` and nothing are NULL.

`open()` reads the whole file once to check it and learn the columns (the union of the rows'
keys); the rows are read again, from the same file, when they are asked for.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any

import yaml

from refsync.config import FileSourceConfig, TableSpec
from refsync.errors import ConfigError, FileMissing, SchemaVersionMismatch
from refsync.interrupts import Stoppable
from refsync.model import Batch, Chunk, ColumnInfo, Row
from refsync.reject import Unfit, UnfitBatch
from refsync.sources.base import Read, ReadPlan, RowsRead
from refsync.tracking import TRACKING_COLUMNS
from refsync.transform import row_chunks

log = logging.getLogger(__name__)

MAX_ALIAS_EXPANSIONS = 100
MAX_DEPTH = 64
LAYOUT_HINT = "see config/reference_data/product_lines.yml for the layout"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_SAFE_TAGS = {_TAG + t for t in ("null", "bool", "int", "float", "binary", "timestamp", "omap",
                                 "pairs", "set", "str", "seq", "map")}
_NULLS = {"", "~", "null", "Null", "NULL"}
_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _line(event: yaml.Event) -> int:
    mark: Any = event.start_mark
    return int(mark.line) + 1


@dataclass
class _Anchor:
    cost: int  # alias expansions one use of it makes: itself and those it holds
    value: Any = None  # a scalar's value, a row-like mapping as a dict, else an Unfit


class _Utf8Text:
    """The file as text for the parser, read in pieces; not UTF-8 is a ConfigError with
    the offset of the first bad byte (a UTF-8 BOM is dropped)."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        self.raw = raw
        self.path = path
        self.name = str(path)
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.offset = 0

    def read(self, size: int = 65536) -> str:
        data = self.raw.read(max(size, 1))
        pending = len(self.decoder.getstate()[0])
        try:
            text: str = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            where = self.offset - pending + exc.start
            raise ConfigError(f"{self.path}: not UTF-8 text (byte {where})") from None
        self.offset += len(data)
        return text


class _Events:
    """The file's YAML events, bounded: nesting depth, alias expansions, known tags only.
    Anchors are remembered with what one use of them costs."""

    def __init__(self, stream: _Utf8Text, path: Path) -> None:
        self.loader = _Loader(stream)
        self.path = path
        self.depth = 0
        self.expansions = 0
        self.anchors: dict[str, _Anchor] = {}
        self._open: list[tuple[Any, int]] = []  # (start, expansions before it)

    def fail(self, event: yaml.Event, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.path} (line {_line(event)}): {message}", hint=hint)

    def next(self) -> Any:
        """The next event (the parser's event classes; `Any` for their attributes)."""
        try:
            event = self.loader.get_event()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{self.path}{where}: not valid YAML: {problem}") from None
        kind = type(event)
        if kind is yaml.ScalarEvent or kind in _START:
            tag = event.tag
            if tag is not None and tag != "!" and tag not in _SAFE_TAGS:
                raise self.fail(event, "not valid YAML: could not determine a constructor "
                                f"for the tag {tag!r}")
        if kind in _START:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(event, f"nested more than {MAX_DEPTH} levels deep",
                                hint=LAYOUT_HINT)
            self._open.append((event, self.expansions))
        elif kind in _END:
            self.depth -= 1
            start, before = self._open.pop()
            if start.anchor is not None:
                self.anchors[start.anchor] = _Anchor(1 + self.expansions - before, _unfit(start))
        elif kind is yaml.ScalarEvent and event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(1, _scalar(event))
        elif kind is yaml.AliasEvent:
            self._expand(event)
        return event

    def _expand(self, event: yaml.AliasEvent) -> None:
        anchor = self.anchors.get(event.anchor or "")
        if anchor is None:
            raise self.fail(event, f"not valid YAML: found undefined alias {event.anchor!r}")
        self.expansions += anchor.cost
        if self.expansions > MAX_ALIAS_EXPANSIONS:
            raise self.fail(
                event, f"more than {MAX_ALIAS_EXPANSIONS} YAML alias expansions in the document",
                hint="write the values out instead of anchors (&) and aliases (*)")

    def aliased(self, event: yaml.AliasEvent) -> Any:
        """What an alias stands for: a scalar's value, a mapping read as a row, or Unfit."""
        return self.anchors[event.anchor or ""].value

    def skip(self, start: yaml.Event) -> None:
        """Read past the collection that `start` opened."""
        depth = 1
        while depth:
            kind = type(self.next())
            if kind in _START:
                depth += 1
            elif kind in _END:
                depth -= 1

    def dispose(self) -> None:
        self.loader.dispose()


def _scalar(event: yaml.ScalarEvent) -> Any:
    """A scalar's value: its exact source text, None for a plain null, Unfit for binary."""
    tag = event.tag
    if tag is None or tag == "!":
        if not event.style and event.implicit[0] and event.value in _NULLS:
            return None
        return event.value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "binary":
        return Unfit(f"binary data (!!binary) is not text (line {_line(event)})", "!!binary …")
    return event.value


def _unfit(start: yaml.CollectionStartEvent) -> Unfit:
    """The value a list or mapping stands for in a row."""
    line = _line(start)
    if isinstance(start, yaml.SequenceStartEvent):
        return Unfit(f"a list is not a single value (line {line})", "[…]")
    if start.tag == _TAG + "set":
        return Unfit(f"a set (!!set) is not a single value (line {line})", "!!set {…}")
    return Unfit(f"a mapping is not a single value (line {line})", "{…}")


def _construct(event: yaml.ScalarEvent) -> Any:
    """A file-level scalar (schema_version, description) as YAML types it."""
    implicit = (bool(event.implicit[0]), bool(event.implicit[1]))
    resolver: Any = yaml.resolver.Resolver()
    tag = event.tag if event.tag not in (None, "!") else resolver.resolve(
        yaml.ScalarNode, event.value, implicit)
    node = yaml.ScalarNode(tag, event.value, style=event.style or None)
    return yaml.constructor.SafeConstructor().construct_object(node)


@dataclass
class _Header:
    """The file-level keys, known once the whole document has been read."""

    version: Any = None
    raw_version: str | None = None
    has_version: bool = False
    description: str | None = None
    seen: set[str] = field(default_factory=set)


class _Document:
    """One YAML data file read as events: `rows()` yields (line, {column: value}) and fills
    `header` as the file-level keys go by."""

    def __init__(self, events: _Events, path: Path) -> None:
        self.events = events
        self.path = path
        self.header = _Header()

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        ev = self.events
        ev.next()  # StreamStart
        event = ev.next()
        if isinstance(event, yaml.StreamEndEvent):
            raise self._not_a_mapping("empty")
        root = ev.next()
        if not isinstance(root, yaml.MappingStartEvent):
            if isinstance(root, yaml.ScalarEvent) and _scalar(root) is None:
                raise self._not_a_mapping("empty")
            raise self._not_a_mapping("a list" if isinstance(root, _START) else "a scalar")
        yield from self._top_level()
        ev.next()  # DocumentEnd
        extra = ev.next()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise ev.fail(extra, "not valid YAML: expected a single document in the stream")

    def _not_a_mapping(self, what: str) -> ConfigError:
        return ConfigError(
            f"{self.path}: expected a mapping with schema_version and data, found {what}",
            hint=LAYOUT_HINT)

    def _top_level(self) -> Iterator[tuple[int, dict[str, Any]]]:
        ev, head = self.events, self.header
        while not isinstance(key := ev.next(), yaml.MappingEndEvent):
            if not isinstance(key, yaml.ScalarEvent):
                raise ev.fail(key, "a top-level key must be a single value, not a list, "
                              "mapping or alias", hint=LAYOUT_HINT)
            name = key.value
            if name in head.seen:
                raise ev.fail(key, f"duplicate top-level key {name!r}: it may appear once")
            head.seen.add(name)
            value = ev.next()
            if name == "data":
                yield from self._data(value)
            elif name in ("schema_version", "description"):
                if not isinstance(value, yaml.ScalarEvent):
                    raise ev.fail(value, f"{name} must be a single value", hint=LAYOUT_HINT)
                constructed = _construct(value)
                if name == "description":
                    head.description = None if constructed is None else str(constructed)
                else:
                    head.has_version = constructed is not None
                    head.version, head.raw_version = constructed, value.value
            elif isinstance(value, _START):
                self._anchored_or_skip(value)

    def _data(self, value: yaml.Event) -> Iterator[tuple[int, dict[str, Any]]]:
        ev = self.events
        if isinstance(value, yaml.ScalarEvent) and _scalar(value) is None:
            return
        if not isinstance(value, yaml.SequenceStartEvent):
            found = ("a mapping" if isinstance(value, yaml.MappingStartEvent)
                     else "an alias" if isinstance(value, yaml.AliasEvent) else "a scalar")
            raise ev.fail(value, f"data must be a list of rows, found {found}", hint=LAYOUT_HINT)
        index = 0
        while not isinstance(item := ev.next(), yaml.SequenceEndEvent):
            row: Any = None
            if isinstance(item, yaml.MappingStartEvent):
                row = self._mapping(item)
            elif isinstance(item, yaml.AliasEvent):
                row = ev.aliased(item)
            elif isinstance(item, yaml.ScalarEvent):
                row = _scalar(item)
            if not isinstance(row, dict):
                found = ("a list" if isinstance(item, yaml.SequenceStartEvent)
                         else "null" if row is None else "a single value")
                raise ev.fail(item, f"data[{index}] must be a mapping of column: value, "
                              f"found {found}", hint=LAYOUT_HINT)
            yield _line(item), row
            index += 1

    def _mapping(self, start: yaml.MappingStartEvent) -> dict[str, Any]:
        """A row-like mapping: column names to scalar values (Unfit for the others); a
        merge key (`<<: *anchor`) adds the anchored mapping's columns not set here."""
        ev = self.events
        row: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        while not isinstance(key := ev.next(), yaml.MappingEndEvent):
            if not isinstance(key, yaml.ScalarEvent):
                raise ev.fail(key, "a column name must be a single value, not a list, "
                              "mapping or alias", hint=LAYOUT_HINT)
            name = key.value
            if name in row:
                raise ev.fail(key, f"duplicate key {name!r} in a mapping: each column may "
                              "appear once per row")
            value = ev.next()
            if name == "<<" and not key.style and key.tag is None:
                merged.extend(self._merge_sources(value))
                continue
            if isinstance(value, yaml.ScalarEvent):
                row[name] = _scalar(value)
            elif isinstance(value, yaml.AliasEvent):
                target = ev.aliased(value)
                row[name] = (Unfit(f"a mapping is not a single value (line {_line(value)})",
                                   "{…}") if isinstance(target, dict) else target)
            else:
                row[name] = self._anchored_or_skip(value)
        for extra in merged:
            for name, v in extra.items():
                row.setdefault(name, v)
        if start.anchor is not None:
            ev.anchors[start.anchor].value = row
        return row

    def _merge_sources(self, value: yaml.Event) -> list[dict[str, Any]]:
        """The mappings a merge key names: one alias, or a list of aliases."""
        ev = self.events
        aliases: list[yaml.Event] = [value]
        if isinstance(value, yaml.SequenceStartEvent):
            aliases = []
            while not isinstance(item := ev.next(), yaml.SequenceEndEvent):
                aliases.append(item)
        out = []
        for alias in aliases:
            target = ev.aliased(alias) if isinstance(alias, yaml.AliasEvent) else None
            if not isinstance(target, dict):
                if isinstance(alias, _START):
                    ev.skip(alias)
                raise ev.fail(alias, "a merge key (<<) takes an alias of a mapping "
                              "(<<: *name) or a list of them")
            out.append(target)
        return out

    def _anchored_or_skip(self, start: yaml.CollectionStartEvent) -> Unfit:
        """A nested list or mapping: read as a row when anchored (a merge key may use
        it), else skipped unread; in a row either is an Unfit value."""
        if isinstance(start, yaml.MappingStartEvent) and start.anchor is not None:
            self._mapping(start)
        else:
            self.events.skip(start)
        return _unfit(start)


class YamlFileSource:
    """Rows of a reference-data YAML file; never incremental."""

    source_type = "config_file"
    changed_at: datetime | None = None

    def __init__(self, spec: TableSpec, *, batch_size: int) -> None:
        sc = spec.source_config
        if not isinstance(sc, FileSourceConfig):
            raise ConfigError(f"table {spec.name}: config_file needs file_path and schema_version")
        self.spec = spec
        self.batch_size = batch_size
        self.max_bytes = spec.options.max_yaml_bytes
        self.path = sc.file_path.absolute()  # a relative path is read from the working folder
        self.expected_version = sc.schema_version
        self.mapping = [(c.source, c.target) for c in sc.columns] if sc.columns else None
        self.columns: list[str] = [t for _, t in self.mapping] if self.mapping else []
        self.cursor_column: str | None = None
        self.warnings: list[str] = []
        self.description: str | None = None
        self._keys: list[str] | None = None  # the row keys read, in `columns` order
        self._identity: tuple[int, ...] | None = None
        self._unfit = False  # a row holds a value that is not a scalar

    def describe(self) -> str:
        return f"config_file {self.path} (schema_version {self.expected_version})"

    def open(self) -> YamlFileSource:
        """Read and check the whole file; FileMissing, SchemaVersionMismatch or ConfigError."""
        if self._keys is not None:
            return self
        self._identity = None
        seen: dict[str, None] = {}
        rows = 0
        unfit = False
        key_sources = self._key_sources()
        with self._document() as doc:
            for line, row in doc.rows():
                rows += 1
                for k, v in row.items():
                    seen.setdefault(k, None)
                    unfit = unfit or type(v) is Unfit
                for k in key_sources:
                    if k not in row:
                        raise ConfigError(
                            f"{self.path} (line {line}): a row without the key column {k!r}",
                            hint=f"every row needs {', '.join(key_sources)} (primary_key)")
            header = doc.header
        self._check_version(header)
        self.description = header.description
        self._keys = self._learn_columns(seen, rows)
        self._unfit = unfit
        log.debug("checked %d rows in %s", rows, self.path)
        return self

    def _key_sources(self) -> list[str]:
        """The row keys that hold the primary key."""
        if self.mapping is None:
            return list(self.spec.primary_key)
        by_target = {t: s for s, t in self.mapping}
        return [by_target.get(k, k) for k in self.spec.primary_key]

    def _document(self) -> _Reading:
        try:
            raw = self.path.open("rb")
        except FileNotFoundError:
            raise FileMissing(f"reference data file not found: {self.path}") from None
        except IsADirectoryError:
            raise FileMissing(f"reference data file is a directory: {self.path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(raw.fileno())
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._identity is not None and identity != self._identity:
                raise ConfigError(f"{self.path} changed while refsync read it",
                                  hint="rerun once the file is written")
            self._identity = identity
            if st.st_size > self.max_bytes:
                raise ConfigError(
                    f"{self.path} is {st.st_size:,} bytes, over the limit of "
                    f"{self.max_bytes:,} bytes (max_yaml_bytes)",
                    hint="raise max_yaml_bytes for this table or in defaults (e.g. "
                         "max_yaml_bytes: 256MB), or split the file")
        except BaseException:
            raw.close()
            raise
        return _Reading(raw, self.path)

    def _check_version(self, header: _Header) -> None:
        if not header.has_version:
            raise SchemaVersionMismatch(
                f"{self.path} has no schema_version; the config expects "
                f"{self.expected_version!r}")
        found = str(header.version)  # YAML's float 1.0 → "1.0", int 2 → "2"
        if self.expected_version not in (found, header.raw_version):
            shown = header.raw_version if header.raw_version is not None else found
            raise SchemaVersionMismatch(
                f"{self.path} has schema_version {shown!r}; the config expects "
                f"{self.expected_version!r}")

    def _learn_columns(self, seen: dict[str, None], rows: int) -> list[str]:
        """The row keys to read, in column order; sets `columns` and `warnings`."""
        tracking = set(TRACKING_COLUMNS)
        dropped = [k for k in seen if k in tracking]
        if dropped:
            log.debug("%s: ignoring tracking keys %s (refsync sets them)", self.path, dropped)
        if self.mapping is None:
            # no rows to learn the columns from: the key alone (the table may be emptied)
            keys = [k for k in seen if k not in tracking] or list(self.spec.primary_key)
            self.columns = keys
            return keys
        bad = [t for _, t in self.mapping if t in tracking]
        if bad:
            raise ConfigError(f"table {self.spec.name}: {', '.join(bad)} is a tracking "
                              "column: refsync sets it itself")
        keys = [s for s, _ in self.mapping]
        self.warnings = []
        absent = [k for k in keys if k not in seen]
        if absent and rows:
            self.warnings.append(
                f"{self.path}: no row has key {', '.join(absent)} (mapped in "
                "source_config.columns): the column is NULL in every row")
        unmapped = [k for k in seen if k not in keys and k not in tracking]
        if unmapped:
            self.warnings.append(
                f"{self.path}: keys not in source_config.columns are ignored: "
                f"{', '.join(unmapped)}")
        return keys

    def iter_yaml_rows(self) -> Iterator[Row]:
        """Each row as a tuple in `columns` order, read from the file one at a time."""
        keys = self.open()._keys or []
        with self._document() as doc:
            for _, rec in doc.rows():
                yield tuple([rec.get(k) for k in keys])

    def iter_batches(self, since: Any | None = None) -> Iterator[Batch]:
        """All rows (`since` is ignored: a file is always read whole), `batch_size` at a
        time; a batch holding an Unfit value is an UnfitBatch, so its rows are rejected."""
        rows = self.iter_yaml_rows()
        while batch := list(islice(rows, self.batch_size)):
            if self._unfit and any(type(v) is Unfit for row in batch for v in row):
                batch = UnfitBatch(batch)
            yield batch

    def chunks(self, since: Any | None, columns: list[ColumnInfo], *,
               copy_text: bool = False) -> Iterator[Chunk]:
        """The file's rows as values for the value rules (a file has no cursor)."""
        return row_chunks(self.iter_batches(since), cursor=False)

    def read_plan(self, columns: list[ColumnInfo], *, copy_text: bool,
                  source_timezone: str, target_rows: int | None) -> ReadPlan:
        return ReadPlan("values")

    @contextmanager
    def reading(self, since: Any | None, plan: ReadPlan) -> Iterator[Read]:
        yield RowsRead(self.chunks(since, []))

    def estimated_rows(self) -> int | None:
        return None

    def stoppable(self) -> Stoppable:
        """Parsing runs in Python: a stop ends it at the next event."""
        return Stoppable(busy=lambda: False, cancel=lambda: None, abort=lambda: None)

    def count_null_cursor(self) -> int:
        return 0

    def parse_watermark(self, text: str) -> Any:
        return text

    def close(self) -> None:
        self._keys = None
        self._identity = None


class _Reading:
    """An open data file and its event reader, closed together (`with`)."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        self.raw = raw
        self.events = _Events(_Utf8Text(raw, path), path)
        self.document = _Document(self.events, path)

    def __enter__(self) -> _Document:
        return self.document

    def __exit__(self, *exc: object) -> None:
        try:
            self.events.dispose()
        finally:
            self.raw.close()
