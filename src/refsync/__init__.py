"""refsync: keep warehouse reference tables in step with their authoritative sources.

The library API (`plan`, `sync`, `sync_table`, `status`, `init_db`, the result types) and
`__version__` are resolved on first use (PEP 562), so importing `refsync` (every `refsync`
command does) loads neither the engine (SQLAlchemy, drivers) nor `importlib.metadata`:
`refsync --help` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refsync.api import init_db, plan, sync, sync_table
    from refsync.model import RunResult, TableResult
    from refsync.report import status

    __version__: str

__all__ = ["RunResult", "TableResult", "__version__", "init_db", "plan", "status", "sync",
           "sync_table"]

_LAZY = {"plan": "refsync.api", "sync": "refsync.api", "sync_table": "refsync.api",
         "status": "refsync.report", "init_db": "refsync.api",
         "RunResult": "refsync.model", "TableResult": "refsync.model"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refsync")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'refsync' has no attribute {name!r}")
    globals()[name] = value  # once resolved, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
