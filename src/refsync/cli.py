"""The `refsync` command line: parse, call the library, render, map errors to exit codes.

The only module (with render.py) that knows about Typer and Rich. Exit codes (DESIGN 4.8):
0 all good, 1 a table failed, 2 usage or config error, 3 another run holds the lock,
128+N a signal stopped the run.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from refsync.errors import ConfigError, InternalError, LockHeld, RefsyncError

if TYPE_CHECKING:  # the engine is imported per command, so `--help` starts fast
    from refsync.config import LoadedConfig, Settings

EPILOG = """\b
Example:  refsync -c config/data_sources.yml sync -t 年金计划 --json

\b
Exit codes: 0 every table ok | 1 a table failed, was skipped or guarded (status: a table
failed, never succeeded or missed a night; verify: a table differs) | 2 usage or config
error, nothing done |
3 another run holds the lock | 130/143 interrupted by a signal.
The common options (-c, --env-file, --json, --log-format, -v/-q) go before or after the
command."""

class _PlainFlags:
    """Help without type placeholders: a flag (--json, --help, completion) shows no `<bool>`,
    an argument no `<str>`."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif param.param_type_name == "argument":  # `NAME`, not `NAME <str>`
                param.display_type_rich = lambda ctx: None
        return params


class _Command(_PlainFlags, TyperCommand):
    def get_short_help_str(self, limit: int = 45) -> str:
        """The whole first sentence in the command list (Click would cut it at the width
        left beside the names, with `...`); the list wraps it instead."""
        return str(super().get_short_help_str(limit=1000))


class _Group(_PlainFlags, TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            # bare `refsync`: the help on stdout and exit 2 (plain Click would print it on
            # stderr)
            typer.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(2)
        return list(super().parse_args(ctx, args))


app = typer.Typer(
    name="refsync",
    cls=_Group,
    help="Keep warehouse reference tables in step with their authoritative sources.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    # plain Click help and usage errors: Typer's Rich help would import Rich (and Markdown,
    # Pygments) for every `--help`, a third of its start-up
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)
log = logging.getLogger("refsync.cli")


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# metavars spell what a value looks like; "" hides the type of a flag
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", metavar="PATH", help="Config file (default: $WDH_REFERENCE_SYNC_CONFIG, "
    "else config/data_sources.yml).", show_default=False)]
EnvFileOpt = Annotated[Path | None, typer.Option(
    "--env-file", metavar="PATH", help="Read WDH_* settings from this file instead of ./.env.",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option(
    "--json", metavar="", help="Print one JSON document on stdout.")]
LogFormatOpt = Annotated[LogFormat | None, typer.Option(
    "--log-format", metavar="[text|json]", show_default=False,
    help="Logs on stderr: text (default) or json (one object a line).")]
VerboseOpt = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, metavar="", show_default=False,
    help="-v: more detail (SQL phases and timings); -vv: the same, and tracebacks.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", metavar="", help="Only warnings and errors.")]
TablesOpt = Annotated[list[str] | None, typer.Option(
    "--table", "-t", metavar="NAME", help="A table's name or target_table; repeat for more.",
    show_default=False)]
FullOpt = Annotated[bool, typer.Option(
    "--full", metavar="", help="Ignore watermarks: read every row.")]
PlanOnlyOpt = Annotated[bool, typer.Option(
    "--plan-only", metavar="", help="Only show what would change.")]
MassDeleteOpt = Annotated[bool, typer.Option(
    "--allow-mass-delete", metavar="", help="Let delete_insert remove more than max_delete_ratio.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", metavar="", help="Run even when reference sync is disabled.")]
MetricsOpt = Annotated[Path | None, typer.Option(
    "--metrics-file", metavar="PATH", show_default=False,
    help="Write Prometheus textfile metrics here, atomically "
    "(default: $WDH_REFERENCE_SYNC_METRICS_FILE).")]


def _version() -> str:
    import refsync  # `__version__` reads the installed metadata on first use

    return refsync.__version__


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"refsync {_version()}\n")
        raise typer.Exit(0)


@dataclass
class Common:
    """The common options as given before the command (`refsync -c x.yml sync`)."""

    config: Path | None = None
    env_file: Path | None = None
    as_json: bool = False
    log_format: LogFormat | None = None
    verbose: int = 0
    quiet: bool = False


@app.callback()
def _common(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option(
        "--version", metavar="", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False,
    config: ConfigOpt = None, env_file: EnvFileOpt = None, as_json: JsonOpt = False,
    log_format: LogFormatOpt = None, verbose: VerboseOpt = 0, quiet: QuietOpt = False,
) -> None:
    """Keep warehouse reference tables in step with their authoritative sources."""
    ctx.meta["refsync.common"] = Common(config, env_file, as_json, log_format, verbose, quiet)


@dataclass
class Context:
    """What every command needs: settings, config, output mode."""

    config_path: Path | None
    env_file: Path | None
    as_json: bool
    log_format: str
    verbosity: int
    on_exit: list[Callable[[int], object]] = field(default_factory=list)

    def setup(self) -> None:
        from refsync.logs import configure_logging

        human = self.log_format == "text"
        emit: Callable[[str], None] | None = None
        # Rich (render) is imported when something is drawn: a `status --json` that succeeds
        # never needs it (render's default human_stderr, True, is right for text logs)
        if not (human and self.as_json) or "refsync.render" in sys.modules:
            from refsync import render

            # on a terminal, log lines go through the console that draws the bars, above them
            if human and not self.as_json and render.err_console.is_terminal:
                emit = render.log_line
            # with JSON logs, stderr carries only JSON lines: the log records say it all
            render.human_stderr = human
        configure_logging(self.log_format, self.verbosity,  # type: ignore[arg-type]
                          emit=emit)

    def settings(self) -> Settings:
        from refsync.config import load_settings

        settings = load_settings(self.env_file)
        from refsync.logs import register_secrets

        register_secrets(settings)
        return settings

    def config(self, settings: Settings) -> LoadedConfig:
        from zoneinfo import ZoneInfo

        from refsync.config import load_config, resolve_config_path
        from refsync.logs import set_display_zone

        loaded = load_config(resolve_config_path(self.config_path, settings))
        set_display_zone(ZoneInfo(loaded.section.timezone))  # one clock for people
        return loaded


def _context(tctx: typer.Context, config: Path | None = None, env_file: Path | None = None,
             as_json: bool = False, log_format: LogFormat | None = None, verbose: int = 0,
             quiet: bool = False) -> Context:
    """Options after the command win; those before it fill in the rest."""
    common = tctx.meta.get("refsync.common") or Common()
    fmt = log_format or common.log_format or LogFormat.text
    quiet = quiet or common.quiet
    verbosity = -1 if quiet else verbose + common.verbose
    ctx = Context(config or common.config, env_file or common.env_file,
                  as_json or common.as_json, fmt.value, verbosity)
    ctx.setup()
    return ctx


def _run(ctx: Context, body: Callable[[], int]) -> None:
    """Run a command body; map refsync errors to one-line messages and exit codes."""
    try:
        code = body()
    except LockHeld as exc:
        code = _error(ctx, exc, 3)
    except ConfigError as exc:
        code = _error(ctx, exc, 2)
    except RefsyncError as exc:
        code = _error(ctx, exc, 1)
    except KeyboardInterrupt:
        from refsync import render

        render.err_console.print("interrupted")
        code = 130
    except Exception as exc:  # a bug of ours: one line for the user, the traceback with -v
        log.debug("unexpected error", exc_info=True)
        internal = InternalError(f"internal error: {type(exc).__name__}: {exc}",
                                 hint="rerun with -v for the traceback and report it")
        code = _error(ctx, internal, 1)
    for hook in ctx.on_exit:  # e.g. the dead-man's-switch ping: it must see every exit code
        hook(code)
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
    doc = {**doc, "version": doc["version"] if "version" in doc else _version()}
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _common_options(config: ConfigOpt = None, env_file: EnvFileOpt = None,
                    as_json: JsonOpt = False, log_format: LogFormatOpt = None,
                    verbose: VerboseOpt = 0, quiet: QuietOpt = False) -> None:
    """The common options as every command takes them after its own (only the signature
    counts: `_command` appends its parameters)."""


def _command(name: str | None = None, *, without: tuple[str, ...] = (),
             ) -> Callable[[Callable[..., int]], Callable[..., None]]:
    """Register `body(ctx, <its own options>) -> exit code` as the command `name`: its own
    options, then the common ones (but those `without`), read together with those given
    before the command (`_context`); `_run` maps its errors to exit codes."""
    common = [p for p in inspect.signature(_common_options, eval_str=True).parameters.values()
              if p.name not in without]
    click_context = inspect.Parameter("tctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      annotation=typer.Context)

    def register(body: Callable[..., int]) -> Callable[..., None]:
        own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]

        def command(tctx: typer.Context, **options: Any) -> None:
            ctx = _context(tctx, **{p.name: options.pop(p.name) for p in common})
            _run(ctx, lambda: body(ctx, **options))

        signature = inspect.Signature([click_context, *own, *common])
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__name__, command.__doc__ = body.__name__, body.__doc__
        return app.command(name, cls=_Command)(command)

    return register


def _sync_command(ctx: Context, metrics_file: Path | None = None, **kwargs: Any) -> int:
    from refsync import alerting, api

    metrics = alerting.RunMetrics(metrics_file)
    if not kwargs.get("plan_only"):  # written however the run ends, an early stop too
        ctx.on_exit.append(metrics.write)
    settings = ctx.settings()
    metrics.path = metrics.path or settings.reference_sync_metrics_file
    if not kwargs.get("plan_only"):  # the dead-man's switch watches real runs only
        url = settings.reference_sync_ping_url
        if url:
            alerting.ping(url, "start")
            ctx.on_exit.append(lambda code: alerting.ping(url, alerting.ping_outcome(code)))
    config = ctx.config(settings)
    metrics.planned = alerting.planned_tables(config, kwargs.get("tables"))
    if ctx.as_json:  # nothing is drawn: Rich is not even imported
        result = api.sync(config, settings, **kwargs)
    else:
        from refsync import render

        with render.progress_for(as_json=False) as progress:
            result = api.sync(config, settings, progress=progress, **kwargs)
    metrics.result = result
    if ctx.as_json:
        _print_json(result.as_json())
    else:
        from refsync import render

        if render.human_stderr:  # with JSON logs (cron), the log records carry the summary
            render.print_run(result)
    return result.exit_code


@_command()
def plan(ctx: Context, tables: TablesOpt = None, full: FullOpt = False) -> int:
    """Show what a sync would do per table; write nothing, take no lock."""
    return _sync_command(ctx, tables=tables, plan_only=True, full=full)


@_command()
def sync(ctx: Context, tables: TablesOpt = None, plan_only: PlanOnlyOpt = False,
         full: FullOpt = False, allow_mass_delete: MassDeleteOpt = False,
         force: ForceOpt = False, metrics_file: MetricsOpt = None) -> int:
    """Sync every enabled table (or those named) in dependency order."""
    return _sync_command(ctx, metrics_file, tables=tables, plan_only=plan_only, full=full,
                         allow_mass_delete=allow_mass_delete, force=force)


@_command("sync-table")
def sync_table(ctx: Context,
               name: Annotated[str, typer.Argument(
                   metavar="NAME", help="The table's name or target_table.", show_default=False)],
               full: FullOpt = False, plan_only: PlanOnlyOpt = False,
               allow_mass_delete: MassDeleteOpt = False, force: ForceOpt = False,
               metrics_file: MetricsOpt = None) -> int:
    """Rerun one table now."""
    return _sync_command(ctx, metrics_file, tables=[name], plan_only=plan_only, full=full,
                         allow_mass_delete=allow_mass_delete, force=force)


@_command()
def status(ctx: Context, tables: TablesOpt = None,
           runs: Annotated[int, typer.Option(
               "--runs", min=0, metavar="N", help="How many runs to list.")] = 20,
           no_fail: Annotated[bool, typer.Option(
               "--no-fail", metavar="", help="Exit 0 even when a table needs attention.")]
           = False,
           only_problems: Annotated[bool, typer.Option(
               "--problems", metavar="", help="Print only what needs a look, one line each "
               "(nothing when all is well).")] = False) -> int:
    """Each table's last run, watermark and error; then the last runs.

    Exits 1 when a table's last run failed, a table never succeeded, or its last success is
    older than 26 hours (a missed night), so cron or a monitor can alert on it; --no-fail
    keeps 0.
    """
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from refsync import alerting
    from refsync import report as reports

    settings = ctx.settings()
    loaded = ctx.config(settings)
    zone = ZoneInfo(loaded.section.timezone)
    report = reports.status(loaded, settings, tables=tables, runs=runs)
    problems = (alerting.status_problems(report, datetime.now(zone))
                + reports.env_file_problems(ctx.env_file))
    # a switched-off sync is not expected to run: nothing to alert on
    expected = reports.disabled_reason(loaded, settings) is None
    code = 1 if problems and expected and not no_fail else 0
    report = {**report, "timezone": loaded.section.timezone, "problems": problems,
              "exit_code": code}
    if ctx.as_json:
        _print_json(report)
    elif only_problems:
        lines = reports.problem_lines(report, datetime.now(zone))
        sys.stdout.write("".join(f"{line}\n" for line in lines))
    else:
        from refsync import render

        render.print_status(report)
    return code


@_command()
def verify(ctx: Context, tables: TablesOpt = None, metrics_file: MetricsOpt = None) -> int:
    """Compare each table's source with its target's authoritative rows; read-only.

    By digests computed inside both databases: per table the source rows, the target's
    authoritative rows, and the rows that differ, are missing from the target or extra in it
    (counts, and up to 20 keys each). Exits 0 when every verified table is in step, 1 when
    one differs or could not be verified. A table digests cannot compare (a YAML source, a
    non-MySQL source, a SQLite target, a column type without a common text) is listed as
    unsupported, with the reason, and does not fail the check. Takes no lock and writes
    nothing to a database; --metrics-file adds its result to the textfile metrics.
    """
    from refsync.verify import verify as verify_tables

    settings = ctx.settings()
    report = verify_tables(ctx.config(settings), settings, tables=tables)
    metrics = metrics_file or settings.reference_sync_metrics_file
    if metrics is not None:  # beside the sync's lines, which stay
        from refsync.alerting import write_verify_metrics

        write_verify_metrics(metrics, report)
    if ctx.as_json:
        _print_json(report.as_json())
    else:
        from refsync import render

        render.print_verify(report)
    return report.exit_code


@_command("init-db")
def init_db(ctx: Context,
            create_tables: Annotated[bool, typer.Option(
                "--create-tables", metavar="",
                help="Also create missing target tables from the config.")] = False,
            print_sql: Annotated[bool, typer.Option(
                "--print-sql", metavar="", help="Print the SQL --create-tables would apply "
                "to every configured table (PostgreSQL), and change nothing.")] = False) -> int:
    """Create refsync's state tables (and, with --create-tables, missing target tables)."""
    from refsync import api

    settings = ctx.settings()
    if print_sql:
        from refsync.ddl import print_sql as render_sql

        sys.stdout.write(render_sql(ctx.config(settings), settings))
        return 0
    actions = api.init_db(ctx.config(settings), settings, create_tables=create_tables)
    if ctx.as_json:
        _print_json({"exit_code": 0, "actions": actions})
    else:
        from refsync import render

        render.print_lines(actions)
    return 0


@_command()
def schedule(ctx: Context,
             cron_d: Annotated[str | None, typer.Option(
                 "--cron-d", metavar="USER", show_default=False,
                 help="Print the lines for /etc/cron.d, running as USER (default: the lines "
                 "for a user's crontab, without a user field).")] = None) -> int:
    """The configured schedule, its next fire times, and the crontab line for this host."""
    from refsync.schedule import host_zone, schedule_report

    settings = ctx.settings()
    report = schedule_report(ctx.config(settings).section, host_zone(), cron_d_user=cron_d)
    if ctx.as_json:
        _print_json(report)
    else:
        from refsync import render

        render.print_schedule(report)
    return 0


@_command(without=("config", "env_file"))
def demo(ctx: Context,
         directory: Annotated[Path, typer.Option(
             "--dir", metavar="DIR", help="Where to build the demo.")] = Path("refsync-demo"),
         rows: Annotated[int, typer.Option(
             "--rows", min=10, metavar="N", help="Rows per legacy table.")] = 10_000) -> int:
    """Build a SQLite legacy database and warehouse, then run the real engine on them."""
    from zoneinfo import ZoneInfo

    from refsync import render
    from refsync.demo import run_demo
    from refsync.logs import set_display_zone

    set_display_zone(ZoneInfo("Asia/Shanghai"))  # the demo config's `timezone`
    code, doc = run_demo(directory, rows, None if ctx.as_json else render.DemoPrinter())
    if ctx.as_json:
        _print_json(doc)
    return code


def main() -> None:
    """Run the command line; ends in SystemExit, as any Click program (tests call this)."""
    app()


def console() -> None:
    """Console-script entry point: `main`, then leave without tearing the interpreter down.

    Python's own exit frees every module and object one by one, a noticeable share of a
    nightly run of small tables. By then every connection is closed and every log handler
    flushed (the atexit handlers run first), so the process ends at once with the same exit
    code. Another (non-daemon) thread still alive, or a stdout that cannot be flushed, takes
    the ordinary way out.

    The cycle collector is off for the process: start-up allocates hundreds of thousands
    of long-lived objects (the imports), and each collection walks them all. A sync makes no
    cyclic garbage worth collecting: rows, chunks and rejects are freed by reference counting
    (a million-row load peaks at the same memory either way; tests/unit/test_startup.py
    counts the cycles a chunk leaves)."""
    import gc

    gc.disable()
    from refsync import interrupts

    interrupts.allow_process_exit()  # a stop that cannot finish in time ends the process
    try:
        main()
        code: Any = 0
    except SystemExit as stop:
        code = stop.code
    _exit_now(code)


def _exit_now(code: Any) -> None:
    import atexit
    import os
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)  # daemon threads (a watchdog, a stopper) never hold the exit
    atexit._run_exitfuncs()  # logging's shutdown (file handlers), coverage, ...
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let Python report it as it always does
        atexit._clear()  # already run
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("message"): printed on stderr, exit 1, as Python does
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
        status = 1
    os._exit(status & 0xFF)
