"""The `refsync` command line: parse, call the library, render, map errors to exit codes.

The only module (with render.py) that knows about Typer and Rich. Exit codes (DESIGN 4.8):
0 all good, 1 a table failed, 2 usage or config error, 3 another run holds the lock,
128+N a signal stopped the run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from refsync.errors import ConfigError, LockHeld, RefsyncError

if TYPE_CHECKING:  # the engine is imported per command, so `--help` starts fast
    from refsync.config import LoadedConfig, Settings

app = typer.Typer(
    name="refsync",
    help="Keep warehouse reference tables in step with their authoritative sources.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
log = logging.getLogger("refsync.cli")

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Config file (default: $WDH_REFERENCE_SYNC_CONFIG, else "
    "config/data_sources.yml).", show_default=False)]
EnvFileOpt = Annotated[Path | None, typer.Option(
    "--env-file", help="Read WDH_* settings from this file instead of ./.env.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
LogFormatOpt = Annotated[str, typer.Option(
    "--log-format", help="Logs on stderr: text or json (one object a line).")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail: SQL phases and timings.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")]
TablesOpt = Annotated[list[str] | None, typer.Option(
    "--table", "-t", help="A table's name or target_table; repeat for more.", show_default=False)]
FullOpt = Annotated[bool, typer.Option("--full", help="Ignore watermarks: read every row.")]
PlanOnlyOpt = Annotated[bool, typer.Option("--plan-only", help="Only show what would change.")]
MassDeleteOpt = Annotated[bool, typer.Option(
    "--allow-mass-delete", help="Let delete_insert remove more than max_delete_ratio.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Run even when reference sync is disabled.")]


@dataclass
class Context:
    """What every command needs: settings, config, output mode."""

    config_path: Path | None
    env_file: Path | None
    as_json: bool
    log_format: str
    verbosity: int

    def setup(self) -> None:
        from refsync import render
        from refsync.logs import configure_logging

        if self.log_format not in ("text", "json"):
            raise typer.BadParameter("use text or json", param_hint="--log-format")
        configure_logging(self.log_format, self.verbosity)  # type: ignore[arg-type]
        # with JSON logs, stderr carries only JSON lines: the log records say it all
        render.human_stderr = self.log_format == "text"

    def settings(self) -> Settings:
        from refsync.config import load_settings

        settings = load_settings(self.env_file)
        from refsync.logs import register_secrets

        register_secrets(settings)
        return settings

    def config(self, settings: Settings) -> LoadedConfig:
        from refsync.config import load_config, resolve_config_path

        return load_config(resolve_config_path(self.config_path, settings))


def _context(config: Path | None, env_file: Path | None, as_json: bool, log_format: str,
             verbose: int, quiet: bool) -> Context:
    ctx = Context(config, env_file, as_json, log_format, -1 if quiet else verbose)
    ctx.setup()
    return ctx


def _run(ctx: Context, body: Callable[[], int]) -> None:
    """Run a command body; map refsync errors to one-line messages and exit codes."""
    from refsync import render

    try:
        code = body()
    except LockHeld as exc:
        code = _error(ctx, exc, 3)
    except ConfigError as exc:
        code = _error(ctx, exc, 2)
    except RefsyncError as exc:
        code = _error(ctx, exc, 1)
    except KeyboardInterrupt:
        render.err_console.print("interrupted")
        code = 130
    except Exception as exc:  # a bug of ours: one line for the user, the traceback with -v
        log.debug("unexpected error", exc_info=True)
        internal = RefsyncError(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="rerun with -v for the traceback and report it")
        internal.error_class = "internal"  # type: ignore[misc]
        code = _error(ctx, internal, 1)
    raise typer.Exit(code)


def _error(ctx: Context, exc: RefsyncError, code: int) -> int:
    from refsync import render

    if ctx.as_json:
        doc: dict[str, Any] = {"exit_code": code, "error_class": exc.error_class,
                               "error": exc.message}
        if exc.hint:
            doc["hint"] = exc.hint
        _print_json(doc)
    render.print_error(exc)
    return code


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _sync_command(ctx: Context, **kwargs: Any) -> int:
    from refsync import api, render

    settings = ctx.settings()
    config = ctx.config(settings)
    progress = render.progress_for(ctx.as_json)
    with progress:
        result = api.sync(config, settings, progress=progress, **kwargs)
    if ctx.as_json:
        _print_json(result.as_json())
    elif render.human_stderr:  # with JSON logs (cron), the log records carry the summary
        render.print_run(result)
    return result.exit_code


@app.command()
def plan(tables: TablesOpt = None, full: FullOpt = False, config: ConfigOpt = None,
         env_file: EnvFileOpt = None, as_json: JsonOpt = False, log_format: LogFormatOpt = "text",
         verbose: VerboseOpt = 0, quiet: QuietOpt = False) -> None:
    """Show what a sync would do per table; write nothing, take no lock."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)
    _run(ctx, lambda: _sync_command(ctx, tables=tables, plan_only=True, full=full))


@app.command()
def sync(tables: TablesOpt = None, plan_only: PlanOnlyOpt = False, full: FullOpt = False,
         allow_mass_delete: MassDeleteOpt = False, force: ForceOpt = False,
         config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
         log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
         quiet: QuietOpt = False) -> None:
    """Sync every enabled table (or those named) in dependency order."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)
    _run(ctx, lambda: _sync_command(ctx, tables=tables, plan_only=plan_only, full=full,
                                    allow_mass_delete=allow_mass_delete, force=force))


@app.command("sync-table")
def sync_table(name: Annotated[str, typer.Argument(help="The table's name or target_table.")],
               full: FullOpt = False, plan_only: PlanOnlyOpt = False,
               allow_mass_delete: MassDeleteOpt = False, force: ForceOpt = False,
               config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
               log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
               quiet: QuietOpt = False) -> None:
    """Rerun one table now."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)
    _run(ctx, lambda: _sync_command(ctx, tables=[name], plan_only=plan_only, full=full,
                                    allow_mass_delete=allow_mass_delete, force=force))


@app.command()
def status(tables: TablesOpt = None,
           runs: Annotated[int, typer.Option("--runs", min=0, help="How many runs to list.")] = 20,
           config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
           log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
           quiet: QuietOpt = False) -> None:
    """Each table's last run, watermark and error; then the last runs."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)

    def body() -> int:
        from refsync import api, render

        settings = ctx.settings()
        report = api.status(ctx.config(settings), settings, tables=tables, runs=runs)
        if ctx.as_json:
            _print_json(report)
        else:
            render.print_status(report)
        return 0

    _run(ctx, body)


@app.command("init-db")
def init_db(create_tables: Annotated[bool, typer.Option(
                "--create-tables", help="Also create missing target tables from the config.")]
            = False,
            config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
            log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
            quiet: QuietOpt = False) -> None:
    """Create refsync's state tables (and, with --create-tables, missing target tables)."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)

    def body() -> int:
        from refsync import api, render

        settings = ctx.settings()
        actions = api.init_db(ctx.config(settings), settings, create_tables=create_tables)
        if ctx.as_json:
            _print_json({"exit_code": 0, "actions": actions})
        else:
            render.print_lines(actions)
        return 0

    _run(ctx, body)


@app.command()
def schedule(config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
             log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
             quiet: QuietOpt = False) -> None:
    """The configured schedule, its next fire times, and the crontab line for this host."""
    ctx = _context(config, env_file, as_json, log_format, verbose, quiet)

    def body() -> int:
        from refsync import render
        from refsync.schedule import host_zone, schedule_report

        settings = ctx.settings()
        report = schedule_report(ctx.config(settings).section, host_zone())
        if ctx.as_json:
            _print_json(report)
        else:
            render.print_schedule(report)
        return 0

    _run(ctx, body)


@app.command()
def demo(directory: Annotated[Path, typer.Option(
             "--dir", help="Where to build the demo.")] = Path("refsync-demo"),
         rows: Annotated[int, typer.Option("--rows", min=10, help="Rows per legacy table.")]
         = 10_000,
         as_json: JsonOpt = False, log_format: LogFormatOpt = "text", verbose: VerboseOpt = 0,
         quiet: QuietOpt = False) -> None:
    """Build a SQLite legacy database and warehouse, then run the real engine on them."""
    ctx = _context(None, None, as_json, log_format, verbose, quiet)

    def body() -> int:
        from refsync import render
        from refsync.demo import run_demo

        return run_demo(directory, rows, as_json=as_json, out=render)

    _run(ctx, body)


def main() -> None:
    """Console-script entry point."""
    app()
