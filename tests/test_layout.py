"""The package's folders are its plan (docs/architecture.md): imports only run down the layers,
and no module imports one that imports it back, not even for typing."""

from __future__ import annotations

import ast
from pathlib import Path

import meow_async

PACKAGE = Path(meow_async.__file__).parent

#: Each part, and the parts below it that it may import. ``exceptions`` is below everything.
LAYERS: dict[str, set[str]] = {
    "exceptions": set(),
    "model": {"exceptions"},
    "monitors": {"exceptions", "model"},
    "handlers": {"exceptions", "model"},
    # The job start path reads whether a file is still being written (monitors.files.writing).
    "conductors": {"exceptions", "model", "monitors"},
    "notify": {"exceptions", "model"},
    "runner": {"exceptions", "model", "monitors", "handlers", "conductors", "notify"},
    "cli": {"exceptions", "model", "monitors", "conductors", "runner"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").exists()


def _imports(path: Path) -> set[str]:
    """The meow_async modules a file imports, type-only imports included."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("meow_async"):
                continue
            # `from . import forkserver` imports a module, not a name of the package
            modules = {f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")}
            out.update(modules)
            if len(modules) < len(node.names):
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("meow_async"))
    out.discard(me)
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    graph = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # A package's __init__ is imported with any of its modules: `a.b.c` also imports `a.b`.
    return {
        m: {t for t in targets if t in graph or t.rpartition(".")[0] in graph}
        for m, targets in graph.items()
    }


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for module, targets in _graph().items():
        part = _part(module)
        if part not in LAYERS:
            continue  # the package's own __init__ and __main__ gather everything
        for target in targets:
            other = _part(target)
            if other and other != part and other not in LAYERS[part]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports up or across the layers:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    modules = {m for m in graph if _part(m) in LAYERS}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            t = t if t in graph else t.rpartition(".")[0]
            if t not in modules or t == m:
                continue
            # importing a package's module runs the package's __init__, which is not a cycle
            # unless the __init__ imports back
            if state.get(t) == 1:
                cycles.append([*path[path.index(t) :], t])
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
