"""Every import between trainctl's own modules, function-level imports included, and the layering
rule.

Run it to see the graph's problems: `python tests/import_graph.py` prints each import cycle, each
import that runs up the layers, and each private name one module takes from another (nothing, when
the rule holds). tests/test_layers.py holds the same rule in the suite."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "cli", "benchmarks")

# The rooms, lowest first. A module imports from its own room and from rooms below it, never above:
# the CLI sits on the daemon's rooms, the service on everything it runs, and the foundation
# (daemon/'s top-level modules) on nothing of ours.
ROOMS = (
    # foundation: home paths, atomic files, errors, config, the job queue, devices, signals
    "daemon",
    "daemon.chat",  # how a record becomes a conversation and a conversation becomes tokens
    # what a run leaves behind (checkpoints, flags, snapshots, dynamics), read without torch
    "daemon.runs",
    # where a model comes from, loading it, generating with it, exporting an adapter
    "daemon.models",
    "daemon.curation",  # reading, checking and splitting an input file
    "daemon.training",  # the recipe, its Trainer and its collectors
    "daemon.distributed",  # one job in several processes: torchrun, Ray
    "daemon.bench",  # batch generation over a prompt file, comparison of runs
    "daemon.service",  # the daemon: inbox, queue control, notices, the worker a job runs in
    "cli",  # the commands and the browser views
    "benchmarks",  # scripts that time and measure the above (they use its public names only)
)


@dataclass(frozen=True)
class Import:
    """One import statement's target inside trainctl."""

    importer: str
    target: str
    name: str | None  # the name taken from `target` (from-imports of a name, not of a module)
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(importer: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of a trainctl module in `path`, at any depth (functions, methods, branches)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def add(target: str, name: str | None, line: int) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != importer:
            found.append(Import(importer, target, name, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(importer, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    add(submodule, None, node.lineno)
                else:
                    add(base, alias.name, node.lineno)
    return found


def import_graph(
    root: Path = ROOT, packages: tuple[str, ...] = PACKAGES
) -> dict[str, list[Import]]:
    modules = find_modules(root, packages)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for edge in edges:
                target = edge.target
                if target not in graph:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def room_of(module: str) -> int:
    """The index in ROOMS of the room that holds `module`."""
    best = -1
    for position, room in enumerate(ROOMS):
        if room == "daemon":
            matches = module == "daemon" or (
                module.startswith("daemon.") and module.count(".") == 1
            )
        else:
            matches = module == room or module.startswith(room + ".")
        if matches and (best < 0 or len(room) > len(ROOMS[best])):
            best = position
    if best < 0:
        raise ValueError(f"{module} is in no room of tests/import_graph.ROOMS")
    return best


def upward_imports(graph: dict[str, list[Import]]) -> list[Import]:
    return [
        edge
        for edges in graph.values()
        for edge in edges
        if room_of(edge.target) > room_of(edge.importer)
    ]


def private_names_taken(graph: dict[str, list[Import]]) -> list[Import]:
    """Imports of a name that starts with `_` from another module."""
    return [
        edge
        for edges in graph.values()
        for edge in edges
        if edge.name and edge.name.startswith("_") and not edge.name.startswith("__")
    ]


def problems(root: Path = ROOT) -> list[str]:
    graph = import_graph(root)
    found = [f"cycle: {' ⇄ '.join(component)}" for component in cycles(graph)]
    found += [
        f"upward: {edge.importer}:{edge.line} imports {edge.target} "
        f"({ROOMS[room_of(edge.target)]} is above {ROOMS[room_of(edge.importer)]})"
        for edge in upward_imports(graph)
    ]
    found += [
        f"private: {edge.importer}:{edge.line} takes {edge.target}.{edge.name}"
        for edge in private_names_taken(graph)
    ]
    return found


if __name__ == "__main__":
    reported = problems(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
    print("\n".join(reported) or "no cycles, no upward imports, no private names taken")
    sys.exit(1 if reported else 0)
