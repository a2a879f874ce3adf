"""The package's import graph has no cycles (docs/architecture.md, "Dependency direction").

The graph is built statically with `ast` from every `import` and `from ... import` inside
`src/advimage`, so the test needs no heavy import and sees code paths a run may not take.

What counts as an edge, decided here once:

- **Every import counts, lazy ones included.** An import inside a function (or under
  `if TYPE_CHECKING:`) is still an arrow from one module to another. Moving an import into a
  function hides a cycle from the interpreter (it no longer fails at import time), not from the
  design: the two modules still need each other. The allow-list below is empty and is meant to
  stay so; an entry needs its reason.
- A node is a module file; a package is its `__init__.py`. `from .pkg import name` is an edge to
  `pkg.name` when that is a submodule, else to `pkg` (the `__init__` that defines or re-exports it).
- Importing `pkg.mod` first runs `pkg/__init__.py`: that is an edge to `pkg` too, when the importer
  is outside `pkg` (`codec` importing `jpeg.io` runs `jpeg/__init__.py`, and whatever it imports).
  From inside `pkg` it is not: `pkg` is already being imported when its submodules run, so a
  package's `__init__` importing its own submodules (registrations, re-exports) closes no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "advimage"

# (importer, imported) edges tolerated despite closing a cycle, each with its reason. None.
ALLOWED: dict[tuple[str, str], str] = {}

# Between top-level units (a package or a module directly under advimage/, the package's own
# __init__ left out: it is the facade over all of them), the arrows must point one way too. Edges
# left out of that check, each with its reason:
ALLOWED_BETWEEN_UNITS: dict[tuple[str, str], str] = {
    (f"{PACKAGE}.models.specs", f"{PACKAGE}.specs"):
        "compatibility alias: specs moved above models and defenses; nothing in advimage imports the alias",
}


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(base: str, name: str, modules: dict[str, Path]) -> str | None:
    """The module `base.name` if it exists, else `base` if it is one of ours, else None."""
    full = f"{base}.{name}" if name else base
    if full in modules:
        return full
    return base if base in modules else None


def _packages_run(importer: str, target: str, importer_is_package: bool) -> set[str]:
    """The packages whose `__init__` importing `target` runs: its parents that are not the importer's.

    The importer's own parents are already imported (or being imported) when its code runs, so
    `attacks.fgsm` importing `attacks.base` runs nothing more; `codec` importing `jpeg.io` runs
    `jpeg/__init__.py` first, and whatever that imports.
    """
    own = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    own_parents = {".".join(own[:i]) for i in range(1, len(own) + 1)}
    parts = target.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} - own_parents


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """module -> the package modules it imports (module-level and function-level alike)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        # `import a.b.c` binds a and runs a.b.c: the edge is to the deepest module we have
                        parts = alias.name.split(".")
                        while parts and ".".join(parts) not in modules:
                            parts.pop()
                        targets.append(".".join(parts) or None)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = module.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                    if not (base == PACKAGE or base.startswith(PACKAGE + ".")):
                        continue
                for alias in node.names:
                    targets.append(_resolve(base, alias.name if alias.name != "*" else "", modules))
            for target in targets:
                if target and target != module:
                    graph[module].add(target)
                    graph[module].update(_packages_run(module, target, is_package))
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                    components.append(sorted(component))
    return sorted(components)


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module (breadth-first, so a shortest one)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return component


def test_graph_sees_the_package():
    graph = import_graph()
    assert "advimage.cli" in graph and "advimage.engine" in graph
    assert "advimage.engine" in graph["advimage.cli"]  # a known edge: the CLI drives the engine


def test_lazy_relative_and_package_imports_are_edges(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")  # lazy, and runs sub/__init__.py
    (pkg / "sub" / "__init__.py").write_text("from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("from ..a import f\nfrom . import c\nthing = 1\n")
    (pkg / "sub" / "c.py").write_text("from .b import thing\n")  # a sibling: sub/__init__ already runs
    (pkg / "d.py").write_text("import advimage.sub.c\nfrom advimage import a\n")
    graph = import_graph(tmp_path)
    sub = f"{PACKAGE}.sub"
    assert graph[f"{PACKAGE}.a"] == {f"{sub}.b", sub}
    assert graph[sub] == {f"{sub}.b"}
    assert graph[f"{sub}.b"] == {f"{PACKAGE}.a", f"{sub}.c"}
    assert graph[f"{sub}.c"] == {f"{sub}.b"}
    assert graph[f"{PACKAGE}.d"] == {f"{sub}.c", sub, f"{PACKAGE}.a"}
    assert strongly_connected(graph) == [[f"{PACKAGE}.a", sub, f"{sub}.b", f"{sub}.c"]]
    assert _cycle_in([f"{PACKAGE}.a", sub, f"{sub}.b", f"{sub}.c"], graph) == [f"{PACKAGE}.a", f"{sub}.b",
                                                                              f"{PACKAGE}.a"]


def test_no_import_cycles():
    graph = import_graph()
    for edge in ALLOWED:
        graph[edge[0]].discard(edge[1])
    cycles = strongly_connected(graph)
    lines = []
    for component in cycles:
        cycle = _cycle_in(component, graph)
        lines.append(f"{len(component)} modules: {', '.join(component)}\n    e.g. {' -> '.join(cycle)}")
    assert not cycles, f"{len(cycles)} import cycle(s) in src/{PACKAGE}:\n" + "\n".join(lines)


def test_moved_names_keep_their_old_import_paths():
    """Code moved to break a cycle is still importable where users found it."""
    import advimage.cli
    import advimage.cli_support
    import advimage.defenses
    import advimage.defenses.registry
    import advimage.detect.meta
    import advimage.detect.store
    import advimage.models.specs
    import advimage.specs

    for name in ("fail", "check_device", "check_out_dir", "main"):
        assert callable(getattr(advimage.cli, name))
    assert advimage.cli.fail is advimage.cli_support.fail
    for name in ("apply_defense", "check", "load_classifier", "parse", "split_weights"):
        assert getattr(advimage.models.specs, name) is getattr(advimage.specs, name)
    for name in ("DetectorLoadError", "annotate", "read_meta", "write_meta", "versions"):
        assert getattr(advimage.detect.store, name) is getattr(advimage.detect.meta, name)
    for name in ("register", "get", "names", "create", "UnknownDefenseError"):
        assert getattr(advimage.defenses, name) is getattr(advimage.defenses.registry, name)


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_cycles_between_top_level_units():
    """models -> defenses -> models is no cycle between modules, but it is one between packages."""
    graph = import_graph()
    for edge in ALLOWED_BETWEEN_UNITS:
        assert edge[1] in graph[edge[0]], f"stale allow-list entry {edge}"
        graph[edge[0]].discard(edge[1])
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == PACKAGE:
            continue
        units.setdefault(_unit(module), set()).update(_unit(t) for t in targets if t != PACKAGE)
    for unit, targets in units.items():
        targets.discard(unit)
    cycles = strongly_connected(units)
    lines = [f"{', '.join(c)}\n    e.g. {' -> '.join(_cycle_in(c, units))}" for c in cycles]
    assert not cycles, "cycle(s) between top-level units:\n" + "\n".join(lines)
