"""The shape of the code, checked: gearsight's import graph has no cycle, and the library packages
never import the CLI (``commands/``).

Every module under src/gearsight is parsed (not imported, so this runs in milliseconds and sees
imports inside functions too); ``import gearsight.x`` and ``from . import y`` are resolved to the
module they load. An import inside a function still makes a cycle: it is only a cycle that
waits for the first call to show.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "gearsight"

# Library packages that must never reach up into the CLI (argparse + printing).
NO_COMMANDS = ("gearsight.serve", "gearsight.data", "gearsight.image", "gearsight.cntk")


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _owner(name: str, mods) -> str | None:
    """The module that ``import name`` loads last: name itself, or the package holding the attribute."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owner(a.name, mods) for a in node.names if a.name.split(".")[0] == "gearsight")
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # from . import x, from ..data import y
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != "gearsight":
                    continue
                for alias in node.names:  # `from pkg import submodule` loads the submodule
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in mods else _owner(module, mods))
        targets.discard(None)
        targets.discard(name)
        graph[name] = targets  # type: ignore[assignment]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
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


def _within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_graph_sees_every_kind_of_import():
    """The walker itself: absolute, relative and in-function imports all become edges."""
    graph = import_graph()
    assert "gearsight.cli" in graph and "gearsight.commands.serve_cmd" in graph
    assert "gearsight" in graph["gearsight.cli"]  # `from gearsight import __version__`, inside a function
    assert len(graph) > 50


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    described = [" <-> ".join(c) + ": " + "; ".join(f"{m} imports {', '.join(sorted(graph[m] & set(c)))}"
                                                    for m in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_library_packages_never_import_the_cli():
    graph = import_graph()
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() if _within(m, NO_COMMANDS)
                 for t in targets if _within(t, ("gearsight.commands",)))
    assert not bad, "a library package imports the CLI (commands/ is argparse + printing only):\n" + "\n".join(bad)


def test_only_the_cli_imports_commands():
    graph = import_graph()
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items()
                 if m != "gearsight.cli" and not _within(m, ("gearsight.commands",))
                 for t in targets if _within(t, ("gearsight.commands",)))
    assert not bad, "\n".join(bad)


def test_image_is_the_bottom_layer_and_torch_free():
    """gearsight.image (decode, resize) is shared by packing and the torch-free scoring service: it
    imports nothing from gearsight above it, and no torch at all, not even inside a function."""
    graph = import_graph()
    above = sorted(f"{m} imports {t}" for m, targets in graph.items() if _within(m, ("gearsight.image",))
                   for t in targets if not _within(t, ("gearsight.image",)))
    assert not above, "\n".join(above)
    torch_imports = []
    for path in (PACKAGE / "image").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            torch_imports += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "torchvision")]
    assert not torch_imports, torch_imports


def test_cntk_is_a_plug_in_below_data():
    """CNTK's formats are read by data/ (pack reads map files) and by training; cntk itself never
    imports data/ or anything above it, only gearsight.image."""
    graph = import_graph()
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() if _within(m, ("gearsight.cntk",))
                 for t in targets if not _within(t, ("gearsight.cntk", "gearsight.image")))
    assert not bad, "\n".join(bad)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
