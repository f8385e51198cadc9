"""`refsync demo`: a newcomer's first run, on SQLite, through the real engine (DESIGN 2.3).

Builds a legacy database, a warehouse, a product-lines YAML and a config under one folder,
then runs init-db --create-tables, a full sync, changes ~1 % of the legacy rows, runs an
incremental sync and shows status.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from refsync import api
from refsync.config import LoadedConfig, Settings, load_config
from refsync.model import RunResult

log = logging.getLogger(__name__)


def build_demo(directory: Path, rows: int) -> tuple[LoadedConfig, Settings]:
    """Lay out the demo files (replacing an earlier demo in the same folder)."""
    from pydantic import SecretStr

    from refsync import demo_data

    directory.mkdir(parents=True, exist_ok=True)
    legacy = directory / "legacy.sqlite"
    warehouse = directory / "warehouse.sqlite"
    for old in (legacy, warehouse, warehouse.with_name(warehouse.name + "-journal")):
        old.unlink(missing_ok=True)
    demo_data.build_legacy_sqlite(legacy, rows)
    product_lines = directory / "product_lines.yml"
    demo_data.write_product_lines(product_lines)
    config_path = directory / "data_sources.yml"
    config_path.write_text(
        demo_data.demo_config_text(f"sqlite:///{legacy.resolve()}", str(product_lines.resolve())),
        encoding="utf-8")
    settings = Settings(database_url=SecretStr(f"sqlite:///{warehouse.resolve()}"),
                        reference_sync_enabled=True)
    return load_config(config_path), settings


class DemoView(Protocol):
    """What the demo shows as it goes (the CLI's `render.DemoPrinter`); `--json` shows
    nothing until the end."""

    def started(self, directory: Path, rows: int, config: Path) -> None: ...
    def initialised(self, actions: list[str]) -> None: ...
    def changed(self, changed: dict[str, dict[str, int]]) -> None: ...
    def sync_started(self, step: str) -> AbstractContextManager[Any]:
        """The progress object of the step's sync, entered around it."""
        ...
    def synced(self, result: RunResult) -> None: ...
    def finished(self, report: dict[str, Any], try_command: str) -> None: ...


def run_demo(directory: Path, rows: int, view: DemoView | None = None,
             ) -> tuple[int, dict[str, Any]]:
    """Run the demo: its exit code and its `--json` document, which the CLI prints."""
    from refsync import demo_data

    config, settings = build_demo(directory, rows)
    if view is not None:
        view.started(directory, rows, config.path)
    actions = api.init_db(config, settings, create_tables=True)
    if view is not None:
        view.initialised(actions)
    doc: dict[str, Any] = {"dir": str(directory.resolve()), "init_db": actions, "runs": []}
    worst = 0
    for step in ("full", "incremental"):
        if step == "incremental":
            changed = demo_data.mutate_legacy_sqlite(directory / "legacy.sqlite", 0.01)
            doc["changed"] = changed
            if view is not None:
                view.changed(changed)
        with view.sync_started(step) if view is not None else nullcontext() as progress:
            result = api.sync(config, settings, full=step == "full", progress=progress)
        doc["runs"].append({"step": step, **result.as_json()})
        worst = max(worst, result.exit_code)
        if view is not None:
            view.synced(result)
    report = api.status(config, settings)
    doc["status"] = report
    if view is not None:
        url = settings.database_url.get_secret_value() if settings.database_url else ""
        view.finished(report, f"WDH_DATABASE_URL={url} uv run refsync status -c {config.path}")
    return worst, doc
