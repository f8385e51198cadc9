"""The tables' dependency graph (`depends_on`): its problems, and the order to run them in."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refsync.config import TableSpec


def table_graph_problems(tables: list[tuple[str, str, list[str]]]) -> list[str]:
    """Every problem between tables, given (name, schema.target, depends_on) of each:
    names used twice, targets written twice, unknown dependencies, every cycle."""
    names = [name for name, _, _ in tables]
    problems: list[str] = []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"table names must be unique: {dupes} appear more than once")
    targets = [target for _, target, _ in tables]
    dupes = sorted({n for n in targets if targets.count(n) > 1})
    if dupes:
        problems.append(f"two tables write the same target: {dupes}")
    for name, _, depends_on in tables:
        unknown = [d for d in depends_on if d not in names]
        if unknown:
            problems.append(f"table {name!r}: depends_on names unknown tables {unknown}")
    graph = {name: depends_on for name, _, depends_on in tables}
    problems += [f"depends_on forms a cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One path per dependency cycle (`a -> b -> a`), each set of tables once."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 1:
            cycle = [*path[path.index(name):], name]
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                found.append(cycle)
            return
        if state.get(name) == 2:
            return
        state[name] = 1
        for dep in graph.get(name, []):
            if dep in graph:
                visit(dep, [*path, name])
        state[name] = 2

    for name in graph:
        visit(name, [])
    return found


def topological_order(tables: list[TableSpec]) -> list[TableSpec]:
    """Dependencies first, config order otherwise; a cycle is a config error."""
    by_name = {t.name: t for t in tables}
    done: list[TableSpec] = []
    state: dict[str, int] = {}

    def visit(t: TableSpec, path: list[str]) -> None:
        if state.get(t.name) == 2:
            return
        if state.get(t.name) == 1:
            cycle = " -> ".join([*path[path.index(t.name):], t.name])
            raise ValueError(f"depends_on forms a cycle: {cycle}")
        state[t.name] = 1
        for dep in t.depends_on:
            if dep in by_name:
                visit(by_name[dep], [*path, t.name])
        state[t.name] = 2
        done.append(t)

    for t in tables:
        visit(t, [])
    return done
