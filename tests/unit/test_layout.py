"""The import rules of the layout, read from the source with `ast` (nothing is imported):

- schemas/ (the contract) imports nothing of the project;
- query_engine/ imports only schemas/; adapters/ (shared I/O) only schemas/ and query_engine/;
- worker/ (serving) and index_builder/ (offline) never import each other;
- gateway/ (HTTP serving) imports schemas/, query_engine/ and adapters/ only: it talks to the
  workers through Kafka and Redis, never by importing them;
- nothing outside tools/ imports tools/;
- no import circle between modules (relative and function-local imports included).

A package may always import itself. Imports under `if TYPE_CHECKING:` count, and so does
`import_module("literal.name")` (a name computed at run time cannot be checked). Every failure
names the file and line of the import.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "schemas",
    "query_engine",
    "adapters",
    "index_builder",
    "worker",
    "gateway",
    "tools",
)
ANYTHING = frozenset(PACKAGES)
# package -> the project packages it may import (itself included)
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "query_engine": frozenset({"schemas", "query_engine"}),
    "adapters": frozenset({"schemas", "query_engine", "adapters"}),
    "index_builder": frozenset({"schemas", "query_engine", "adapters", "index_builder"}),
    "worker": frozenset({"schemas", "query_engine", "adapters", "worker"}),
    "gateway": frozenset({"schemas", "query_engine", "adapters", "gateway"}),
    "tools": ANYTHING,
}
WHY = {
    "schemas": "schemas is the contract: it imports nothing of the project",
    "query_engine": "query_engine imports only schemas",
    "adapters": "adapters imports only schemas and query_engine",
    "index_builder": "index_builder never imports worker or tools",
    "worker": "worker never imports index_builder or tools",
    "gateway": "gateway never imports worker, index_builder or tools",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "worker.app"
    target: str  # imported first-party module, e.g. "worker.answer"
    where: str  # "worker/app.py:12"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """module name -> file, for every .py under the packages (packages as their __init__)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[_module_name(root, path)] = path
    return found


def _resolve(name: str, attribute: str | None, modules: dict[str, Path]) -> str | None:
    """The first-party module an import loads: `from a.b import c` is module a.b.c when that
    exists, else attribute c of a.b. None for anything else (stdlib, third-party)."""
    if attribute is not None and f"{name}.{attribute}" in modules:
        return f"{name}.{attribute}"
    while name:  # `import a.b.c` of a name that is no file: the nearest package that is
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def collect_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every first-party import of every module, wherever it stands in the file."""
    modules = _modules(root, packages)
    found: list[Import] = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_resolve(alias.name, None, modules) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1
                    base = module.split(".")
                    if not is_package:
                        base.pop()
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    name = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    name = node.module or ""
                targets = [_resolve(name, alias.name, modules) for alias in node.names]
            elif literal := _import_module_literal(node):
                targets = [_resolve(literal, None, modules)]
            for target in dict.fromkeys(targets):
                if target is not None and target != module:
                    found.append(Import(module, target, f"{where}:{node.lineno}"))
    return found


def _import_module_literal(node: ast.AST) -> str | None:
    """The module named by `import_module("a.b")`, `importlib.import_module(...)` or
    `__import__(...)` when it is a literal string."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    first = node.args[0]
    if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
        return first.value if isinstance(first.value, str) else None
    return None


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for i in imports:
        source, target = i.source.split(".")[0], i.target.split(".")[0]
        if target not in ALLOWED[source]:
            problems.append(f"{i.where}: imports {i.target} ({WHY[source]})")
    return problems


def cycles(imports: list[Import]) -> list[str]:
    """One line per import circle (a set of modules that all reach each other), as a path of
    imports with the file:line of each."""
    graph: dict[str, dict[str, str]] = {}
    for i in imports:
        graph.setdefault(i.source, {}).setdefault(i.target, i.where)
    reach = {module: _reachable(graph, module) for module in graph}
    found, seen = [], set()
    for module in sorted(graph):
        if module in seen or module not in reach[module]:
            continue  # already reported, or on no circle
        component = sorted(m for m in reach[module] if module in reach.get(m, ()))
        seen.update(component)
        found.append(_describe(graph, component))
    return found


def _reachable(graph: dict[str, dict[str, str]], start: str) -> set[str]:
    """Modules reachable from `start` by one import or more (`start` itself if on a circle)."""
    reached: set[str] = set()
    todo = list(graph.get(start, {}))
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.get(module, {}))
    return reached


def _describe(graph: dict[str, dict[str, str]], component: list[str]) -> str:
    """A shortest circle through the component's first module, e.g.
    `a.x (a/x.py:3) -> a.y (a/y.py:7) -> a.x`, and the other modules caught in it."""
    members, first = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [first]
    while first not in came_from:  # breadth first, inside the component, back to `first`
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if child in members and child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    path = [first]
    while True:
        path.append(came_from[path[-1]])
        if path[-1] == first:
            break
    path.reverse()
    steps = [f"{a} ({graph[a][b]})" for a, b in itertools.pairwise(path)]
    also = sorted(members - set(path))
    return (
        "import circle: " + " -> ".join([*steps, first]) + (f"; also in it: {also}" if also else "")
    )


def test_every_project_package_is_checked():
    on_disk = {
        p.parent.name
        for p in ROOT.glob("*/__init__.py")
        if p.parent.name not in {"tests", "build", "dist"} and not p.parent.name.startswith(".")
    }
    assert on_disk <= set(PACKAGES), (
        f"packages the import rules do not cover: {on_disk - set(PACKAGES)}"
    )


def test_the_packages_keep_to_their_layers():
    problems = layer_violations(collect_imports(ROOT))
    assert not problems, "imports across the layout's rules:\n" + "\n".join(problems)


def test_no_import_circle():
    found = cycles(collect_imports(ROOT))
    assert not found, "\n".join(found)


# The checker itself: it must catch what it is for, on a throwaway tree.


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if str(parent) != ".":
                (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("name", "text", "line", "wanted"),
    [
        (
            "schemas/events.py",
            "import os\nfrom query_engine import search\n",
            2,
            "query_engine.search",
        ),
        ("schemas/events.py", "def f():\n    import adapters.topics\n", 2, "adapters.topics"),
        ("schemas/events.py", "from ..query_engine import search\n", 1, "query_engine.search"),
        ("query_engine/search.py", "from adapters.topics import deliver\n", 1, "adapters.topics"),
        ("adapters/topics.py", "\n\nfrom worker.answer import answer\n", 3, "worker.answer"),
        ("worker/app.py", "from index_builder import build\n", 1, "index_builder.build"),
        ("index_builder/build.py", "import worker.answer as a\n", 1, "worker.answer"),
        ("worker/app.py", "from tools.cli import main\n", 1, "tools.cli"),
        ("gateway/app.py", "from worker.answer import answer\n", 1, "worker.answer"),
        ("gateway/app.py", "from tools.cli import main\n", 1, "tools.cli"),
        (
            "worker/app.py",
            "import importlib\nimportlib.import_module('tools.cli')\n",
            2,
            "tools.cli",
        ),
        (
            "worker/app.py",
            "import typing\nif typing.TYPE_CHECKING:\n    from index_builder import build\n",
            3,
            "index_builder.build",
        ),
    ],
)
def test_the_checker_reports_a_forbidden_import_with_its_line(tmp_path, name, text, line, wanted):
    root = _tree(
        tmp_path,
        {
            "schemas/keys.py": "import json\nfrom schemas import events\n",
            "query_engine/search.py": "import numpy\nfrom schemas.keys import x\n",
            "adapters/topics.py": "from query_engine.search import y\n",
            "worker/answer.py": "from adapters import topics\n",
            "index_builder/build.py": "from . import publish\n",
            "index_builder/publish.py": "",
            "tools/cli.py": "from worker import answer\nfrom index_builder import build\n",
            name: text,
        },
    )
    problems = layer_violations(collect_imports(root))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name}:{line}: imports {wanted} ("), problems


def test_the_checker_finds_circles_through_relative_and_local_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "tools/cli.py": "import sys\n\n\ndef main():\n    from tools import demo\n",
            "tools/demo.py": "from .client import send\n",
            "tools/client.py": "from . import cli\n",
            "tools/stack.py": "from tools import client\n",  # into the circle, not in it
        },
    )
    found = cycles(collect_imports(root))
    assert found == [
        "import circle: tools.cli (tools/cli.py:5) -> tools.demo (tools/demo.py:1)"
        " -> tools.client (tools/client.py:1) -> tools.cli"
    ]


def test_the_checker_allows_what_the_rules_allow(tmp_path):
    root = _tree(
        tmp_path,
        {
            "schemas/events.py": "import json\nimport pydantic\nfrom schemas.keys import k\n",
            "schemas/keys.py": "k = 1\n",
            "query_engine/search.py": "from schemas import events\n",
            "adapters/topics.py": "from query_engine.search import s\nfrom schemas import keys\n",
            "worker/app.py": "from adapters import topics\nfrom query_engine import search\n",
            "index_builder/build.py": "from adapters.topics import t\n",
            "tools/cli.py": "from worker import app\nfrom index_builder import build\n",
        },
    )
    imports = collect_imports(root)
    assert len(imports) == 9
    assert layer_violations(imports) == [] and cycles(imports) == []
