"""`source_type: config_file`: a versioned YAML file of reference rows (DESIGN 3.2, 4.7).

The file holds `schema_version`, `description` and `data` (a list of mappings; empty or null:
no rows). It is small by nature and read whole. A missing file is `FileMissing` and another
`schema_version` is `SchemaVersionMismatch` (the engine skips the table with a warning);
malformed content is a `ConfigError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from refsync.config import TRACKING_COLUMNS, FileSourceConfig, TableSpec
from refsync.errors import ConfigError, FileMissing, SchemaVersionMismatch
from refsync.model import Batch, Chunk, ColumnInfo, Row
from refsync.transform import row_chunks

log = logging.getLogger(__name__)


def version_text(value: Any) -> str:
    """A schema_version as text: YAML's float 1.0 → "1.0", int 2 → "2"."""
    return str(value)


_STR = "tag:yaml.org,2002:str"
# what YAML 1.1 reads a plain scalar as, besides text and null: re-typing a code such as
# 0701 (octal 449), 1.10 (1.1), 12:30 (base-60 750) or on (true) would change it
_RETYPED = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp")}


def keep_row_text(root: yaml.Node) -> None:
    """Make the plain scalars of `data` rows (keys and values) load as their exact source
    text (DESIGN 3.2); a typed target column parses that text by its own type. Nulls (`~`,
    `null`, nothing) stay NULL; nested mappings and lists, and the file's own keys
    (`schema_version`, ...), load as YAML says."""
    if not isinstance(root, yaml.MappingNode):
        return
    for key, value in root.value:
        if (isinstance(key, yaml.ScalarNode) and key.value == "data"
                and isinstance(value, yaml.SequenceNode)):
            for row in value.value:
                if isinstance(row, yaml.MappingNode):
                    for pair in row.value:
                        for scalar in pair:
                            if (isinstance(scalar, yaml.ScalarNode) and scalar.style is None
                                    and scalar.tag in _RETYPED):
                                scalar.tag = _STR


class YamlFileSource:
    """Rows of a reference-data YAML file; never incremental."""

    source_type = "config_file"

    def __init__(self, spec: TableSpec, *, batch_size: int, base_dir: Path | None = None) -> None:
        sc = spec.source_config
        if not isinstance(sc, FileSourceConfig):
            raise ConfigError(f"table {spec.name}: config_file needs file_path and schema_version")
        self.spec = spec
        self.batch_size = batch_size
        base = base_dir if base_dir is not None else Path.cwd()
        self.path = sc.file_path if sc.file_path.is_absolute() else base / sc.file_path
        self.path = self.path.absolute()
        self.expected_version = sc.schema_version
        self.mapping = [(c.source, c.target) for c in sc.columns] if sc.columns else None
        self.columns: list[str] = [t for _, t in self.mapping] if self.mapping else []
        self.cursor_column: str | None = None
        self.warnings: list[str] = []
        self.description: str | None = None
        self._rows: list[Row] | None = None

    def describe(self) -> str:
        return f"config_file {self.path} (schema_version {self.expected_version})"

    def open(self) -> YamlFileSource:
        """Read and check the file; FileMissing, SchemaVersionMismatch or ConfigError."""
        if self._rows is not None:
            return self
        doc, raw_version = self._load()
        if not isinstance(doc, dict):
            what = "empty" if doc is None else f"a {type(doc).__name__}"
            raise ConfigError(
                f"{self.path}: expected a mapping with schema_version and data, found {what}",
                hint="see config/reference_data/product_lines.yml for the layout",
            )
        self._check_version(doc, raw_version)
        desc = doc.get("description")
        self.description = None if desc is None else str(desc)
        data = doc.get("data")
        if data is None:
            data = []
        if not isinstance(data, list):
            raise ConfigError(f"{self.path}: data must be a list of rows, found a "
                              f"{type(data).__name__}")
        records: list[dict[str, Any]] = []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise ConfigError(f"{self.path}: data[{i}] must be a mapping of column: value, "
                                  f"found {'null' if item is None else type(item).__name__}")
            records.append({str(k): v for k, v in item.items()})
        self._rows = self._to_rows(records)
        log.debug("read %d rows from %s", len(self._rows), self.path)
        return self

    def _load(self) -> tuple[Any, str | None]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise FileMissing(f"reference data file not found: {self.path}") from None
        except IsADirectoryError:
            raise FileMissing(f"reference data file is a directory: {self.path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{self.path}: not UTF-8 text (byte {exc.start})") from None
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                keep_row_text(node)
            doc = None if node is None else loader.construct_document(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{self.path}{where}: not valid YAML: {problem}") from None
        finally:
            loader.dispose()
        # the version as written ("1.10" stays "1.10", though YAML reads it as 1.1)
        raw_version = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (isinstance(key, yaml.ScalarNode) and key.value == "schema_version"
                        and isinstance(value, yaml.ScalarNode)):
                    raw_version = str(value.value)
        return doc, raw_version

    def _check_version(self, doc: dict[Any, Any], raw_version: str | None) -> None:
        if "schema_version" not in doc or doc["schema_version"] is None:
            raise SchemaVersionMismatch(
                f"{self.path} has no schema_version; the config expects "
                f"{self.expected_version!r}")
        found = version_text(doc["schema_version"])
        if self.expected_version not in (found, raw_version):
            shown = raw_version if raw_version is not None else found
            raise SchemaVersionMismatch(
                f"{self.path} has schema_version {shown!r}; the config expects "
                f"{self.expected_version!r}")

    def _to_rows(self, records: list[dict[str, Any]]) -> list[Row]:
        tracking = set(TRACKING_COLUMNS)
        seen: dict[str, None] = {}
        for rec in records:
            for k in rec:
                seen.setdefault(k, None)
        dropped = [k for k in seen if k in tracking]
        if dropped:
            log.debug("%s: ignoring tracking keys %s (refsync sets them)", self.path, dropped)
        if self.mapping is None:
            # no rows to learn the columns from: the key alone (the table may be emptied)
            keys = [k for k in seen if k not in tracking] or list(self.spec.primary_key)
            self.columns = keys
        else:
            bad = [t for _, t in self.mapping if t in tracking]
            if bad:
                raise ConfigError(f"table {self.spec.name}: {', '.join(bad)} is a tracking "
                                  "column: refsync sets it itself")
            keys = [s for s, _ in self.mapping]
            absent = [k for k in keys if k not in seen]
            if absent and records:
                self.warnings.append(
                    f"{self.path}: no row has key {', '.join(absent)} (mapped in "
                    "source_config.columns): the column is NULL in every row")
            unmapped = [k for k in seen if k not in keys and k not in tracking]
            if unmapped:
                self.warnings.append(
                    f"{self.path}: keys not in source_config.columns are ignored: "
                    f"{', '.join(unmapped)}")
        return [tuple(rec.get(k) for k in keys) for rec in records]

    def iter_batches(self, since: Any | None = None) -> Iterator[Batch]:
        """All rows (`since` is ignored: a file is always read whole), `batch_size` at a time."""
        rows = self.open()._rows or []
        for i in range(0, len(rows), self.batch_size):
            yield rows[i:i + self.batch_size]

    def chunks(self, since: Any | None, columns: list[ColumnInfo], *,
               copy_text: bool = False, compare_with: Any = None) -> Iterator[Chunk]:
        """The file's rows as values for the value rules (a file has no cursor)."""
        return row_chunks(self.iter_batches(since), cursor=False)

    def count_null_cursor(self) -> int:
        return 0

    def parse_watermark(self, text: str) -> Any:
        return text

    def close(self) -> None:
        self._rows = None
