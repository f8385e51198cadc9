"""`refsync demo`: a newcomer's first run, on SQLite, through the real engine (DESIGN 2.3).

Builds a legacy database, a warehouse, a product-lines YAML and a config under one folder,
then runs init-db --create-tables, a full sync, changes ~1 % of the legacy rows, runs an
incremental sync and shows status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from refsync import api
from refsync.config import LoadedConfig, Settings, load_config

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


def run_demo(directory: Path, rows: int, *, as_json: bool,
             out: ModuleType) -> tuple[int, dict[str, Any]]:
    """Run the demo: its exit code and its `--json` document, which the CLI prints. `out` is
    the render module (the CLI's), kept out of the library."""
    from refsync import demo_data

    config, settings = build_demo(directory, rows)
    say = (lambda text: None) if as_json else out.out_console.print
    say(f"[bold]refsync demo[/] in {directory.resolve()}: 3 legacy tables x {rows:,} rows "
        "(SQLite), a product-lines YAML, a SQLite warehouse")
    say(f"config: {config.path}")
    actions = api.init_db(config, settings, create_tables=True)
    for line in actions:
        say(f"  init-db: {line}")
    doc: dict[str, Any] = {"dir": str(directory.resolve()), "init_db": actions, "runs": []}
    worst = 0
    for step in ("full", "incremental"):
        if step == "incremental":
            changed = demo_data.mutate_legacy_sqlite(directory / "legacy.sqlite", 0.01)
            doc["changed"] = changed
            say("changed ~1 % of legacy rows: " + ", ".join(
                f"{t} {c['updated']} updated/{c['inserted']} inserted/{c['deleted']} deleted"
                for t, c in changed.items()))
        say(f"\n[bold]{step} sync[/]")
        progress = out.progress_for(as_json)
        with progress:
            result = api.sync(config, settings, full=step == "full", progress=progress)
        doc["runs"].append({"step": step, **result.as_json()})
        worst = max(worst, result.exit_code)
        if not as_json:
            out.print_run(result)
    report = api.status(config, settings)
    doc["status"] = report
    if not as_json:
        say("\n[bold]status[/]")
        out.print_status(report)
        url = settings.database_url.get_secret_value() if settings.database_url else ""
        say(f"\nTry: WDH_DATABASE_URL={url} uv run refsync status -c {config.path}")
    return worst, doc
