"""The code's layout, checked from outside by reading every production module's imports.

Each process role is a package that depends only on itself and on retrovue_air (the code two
roles share): a role reaching into another's internals ties their changes together. The one
exception is the supervisor, which forks the other roles and so calls each one's entry point.
Imports are read from the syntax tree at any depth, so one inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("supervisor", "air_worker", "http_front", "ingest")
SHARED = "retrovue_air"
# What the supervisor runs in each child it forks, and all it may take from another role.
ENTRY_POINTS = {
    "air_worker.worker": {"run_air_worker"},
    "http_front.front": {"run_front"},
    "ingest.ingester": {"run_ingester"},
    "ingest.ahead_of_time": {"main"},
}


def production_modules() -> dict[str, Path]:
    """Every module of the service by dotted name ("http_front.front", "retrovue_air.ffmpeg")."""
    modules = {}
    for package in (*ROLES, SHARED):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = production_modules()


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, (ast.Name, ast.Attribute)) and (
        getattr(node.test, "id", None) == "TYPE_CHECKING" or getattr(node.test, "attr", None) == "TYPE_CHECKING")


def imports(name: str, runtime_only: bool = False) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import in the module, at any depth.

    A relative import is resolved against the module's package; `from pkg import mod` names the
    module pkg.mod when there is one. runtime_only leaves out `if TYPE_CHECKING:` blocks."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        if runtime_only and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def role_of(module: str) -> str:
    return module.split(".")[0]


def test_each_role_imports_only_itself_and_retrovue_air():
    crossings = []
    for name in MODULES:
        own = role_of(name)
        for target, taken, line in imports(name):
            other = role_of(target)
            if other not in ROLES or other == own:
                continue
            if own == "supervisor" and taken in ENTRY_POINTS.get(target, ()):
                continue
            crossings.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
                             + (f".{taken}" if taken else ""))
    assert not crossings, "a role imports another role's internals:\n  " + "\n  ".join(crossings)


def test_retrovue_air_imports_no_role():
    reaching = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
                for name in MODULES if role_of(name) == SHARED
                for target, _, line in imports(name) if role_of(target) in ROLES]
    assert not reaching, "shared code depends on a role:\n  " + "\n  ".join(reaching)


def test_the_x264_arguments_are_written_in_one_module():
    naming = [str(path.relative_to(ROOT)) for path in MODULES.values()
              if any(isinstance(node, ast.Constant) and isinstance(node.value, str) and "libx264" in node.value
                     for node in ast.walk(ast.parse(path.read_text())))]
    assert naming == ["retrovue_air/ffmpeg/profile.py"], naming


def test_no_production_modules_import_each_other_in_a_cycle():
    graph = {name: sorted({target for target, _, _ in imports(name, runtime_only=True)
                           if target in MODULES and target != name}) for name in MODULES}
    cycles = []
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)

