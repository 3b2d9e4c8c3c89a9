"""The layering holds and no new import cycle appears (issue 11, item 8).

Layers, lowest first (ARCHITECTURE.md, "Layers")::

    facta.domain  <-  facta.eventstore  <-  facta.projections  <-  facta.replay  <-  the rest of facta_pkg

A module may import modules of its own layer and of the layers below it, never above.
Path-reading tools (import-linter, grimp) cannot see setuptools' package-dir mapping
(``facta.domain`` is ``domain/``, ``facta`` is ``facta_pkg/``, ...), so this test reads
the mapping from pyproject.toml and walks every module's AST itself: every ``import``
and ``from ... import``, at module level, inside functions, under ``if TYPE_CHECKING:``
and in ``try`` blocks alike, relative ones resolved against the module's package.
Imports under ``if TYPE_CHECKING:`` count for the layers but close no cycle: they never run
(``eventstore/_blocks.py`` names ``EventStore`` in annotations that way).

Modules whose layer is not their package's are classified explicitly in
:data:`MODULE_LAYERS`, each with its reason. Cycles between modules (a module that
imports, at any depth of its code, a module that imports it back, directly or through
others) fail the test unless listed in :data:`ALLOWED_CYCLES`, each with the issue item
that removes it; a listed cycle that is gone fails too, so the list stays exact.

The checker is tested on synthetic trees (at the end), so this test is known to fail
when it should.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Layers by package, lowest first: a module's layer is its longest listed prefix's.
PACKAGE_LAYERS: dict[str, int] = {
    "facta.domain": 0,
    "facta.eventstore": 1,
    # Alembic's environment and the migration helpers the store calls (EventStore.open(migrate=True)):
    # beside the store, as ARCHITECTURE.md's diagram draws them.
    "facta.migrations": 1,
    "facta.projections": 2,
    "facta.replay": 3,
    # Development tools (a local Kafka broker or cluster) the CLI and the tests start: beside
    # the CLI, above the store (devbroker parses bootstrap lists with eventstore's rule).
    "facta.dev": 3,
    # facta's store as an eventsourcing persistence module (PERSISTENCE_MODULE=facta.eventsourcing):
    # an adapter at the edge, above the store (it may use the projections too, e.g. es/events.py);
    # no facta layer imports it.
    "facta.eventsourcing": 3,
    # facta_pkg's modules (facta.testing, facta.__main__): on top.
    "facta": 4,
    # The revisions are scripts alembic loads from their files; no library module imports
    # them. They sit on top: 0003's downgrade reads the projection catalog to drop read models.
    "facta.migrations.versions": 4,
}
#: Modules of facta_pkg that are not on top, and why.
MODULE_LAYERS: dict[str, int] = {
    # The root package: the version and the docstring; it imports nothing and every
    # ``import facta.x`` runs it first.
    "facta": 0,
    # Imports a user's module by name (stdlib only); the projection catalog and the CLI use it.
    "facta.user_modules": 0,
    # The one tree of facta's errors (issue 11 item 6): imports nothing of facta; every layer raises them.
    "facta.errors": 0,
    # The settings from FACTA_* (pydantic-settings; imports facta.errors only): every layer reads its defaults.
    "facta.settings": 0,
    # How a name or an id is shown in a line (escapes, $'...' quoting; stdlib only): the
    # store's errors and the CLI use it.
    "facta.display": 0,
    # OpenTelemetry traces and metrics (issue 15; opentelemetry-api only): the store, the
    # relay and the runners record through them.
    "facta.tracing": 0,
    "facta.metrics": 0,
}
LAYER_NAMES = {0: "domain", 1: "eventstore", 2: "projections", 3: "replay", 4: "facta (top)"}

#: Import cycles that exist today, each as the modules in import order from its smallest
#: name, and the issue item that removes it. Any other cycle fails the test.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: Path
    line: int
    in_function: bool
    type_only: bool = False  # under ``if TYPE_CHECKING:``

    def where(self, root: Path) -> str:
        place = "in a function" if self.in_function else "at module level"
        place += ", for type checking only" if self.type_only else ""
        return f"{self.path.relative_to(root)}:{self.line} ({place})"


def package_dirs(root: Path) -> dict[str, Path]:
    """``[tool.setuptools] package-dir`` of ``root``'s pyproject.toml, for the listed packages."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    return {package: root / mapping[package] for package in config["packages"]}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the distribution, by its import name (a package by its __init__)."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs(root).items():
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _inside(tree: ast.AST, kind: type[ast.AST] | tuple[type[ast.AST], ...], test: object = None) -> set[int]:
    """The ids of the import nodes inside nodes of ``kind`` (for ``ast.If``: in the body of
    an ``if`` whose condition is ``test``, a name or attribute)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, kind):
            continue
        if isinstance(node, ast.If):
            condition = node.test
            name = condition.id if isinstance(condition, ast.Name) else getattr(condition, "attr", None)
            if name != test:
                continue
            body: list[ast.AST] = list(node.body)
        else:
            body = [node]
        inside.update(id(n) for b in body for n in ast.walk(b) if isinstance(n, ast.Import | ast.ImportFrom))
    return inside


def imports(root: Path) -> list[Import]:
    """Every import of a facta module by a facta module, wherever it stands in the code."""
    known = modules(root)
    found: list[Import] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        in_function = _inside(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        type_only = _inside(tree, ast.If, "TYPE_CHECKING")
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    if node.level - 1 >= len(parts):
                        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                    base = ".".join(parts[: len(parts) - (node.level - 1)])
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                if target != "facta" and not target.startswith("facta."):
                    continue
                if target not in known:
                    raise AssertionError(f"{path}:{node.lineno}: imports {target}, which is no module of facta")
                found.append(Import(name, target, path, node.lineno, id(node) in in_function, id(node) in type_only))
    return found


def layer(module: str) -> int:
    if module in MODULE_LAYERS:
        return MODULE_LAYERS[module]
    prefixes = [p for p in PACKAGE_LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"module {module} is in no layer: add it to PACKAGE_LAYERS"
    return PACKAGE_LAYERS[max(prefixes, key=len)]


def upward(found: Iterable[Import]) -> list[Import]:
    """The imports that run up the layers."""
    return [i for i in found if layer(i.imported) > layer(i.importer)]


def cycles(found: Iterable[Import], limit: int = 1000) -> set[tuple[str, ...]]:
    """Every elementary cycle of the import graph, each as its modules in import order
    from its smallest name (a module importing itself is a cycle of one). Imports under
    ``if TYPE_CHECKING:`` never run, so they close no cycle (they still count for layers)."""
    graph: dict[str, set[str]] = {}
    for i in found:
        if i.type_only:
            continue
        graph.setdefault(i.importer, set()).add(i.imported)
        graph.setdefault(i.imported, set())
    result: set[tuple[str, ...]] = set()
    for start in sorted(graph):
        # Cycles whose smallest module is ``start``: paths from it through larger names.
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    result.add(tuple(path))
                    assert len(result) <= limit, f"more than {limit} import cycles"
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return result


def problems(root: Path, allowed: Mapping[tuple[str, ...], str]) -> list[str]:
    """One line per import up the layers, per cycle not in ``allowed``, and per cycle of
    ``allowed`` that is gone."""
    found = imports(root)
    out = [f"{i.where(root)}: {i.importer} ({LAYER_NAMES[layer(i.importer)]}) imports {i.imported}"
           f" ({LAYER_NAMES[layer(i.imported)]}), a layer above it" for i in upward(found)]
    present = cycles(found)
    for cycle in sorted(present - set(allowed)):
        steps = []
        for a, b in zip(cycle, (*cycle[1:], cycle[0]), strict=True):
            where = ", ".join(i.where(root) for i in found if (i.importer, i.imported) == (a, b) and not i.type_only)
            steps.append(f"{a} -> {b} [{where}]")
        out.append("import cycle: " + "; ".join(steps))
    for cycle in sorted(set(allowed) - present):
        out.append(f"the allowed import cycle {' -> '.join(cycle)} is gone: remove it from ALLOWED_CYCLES")
    return out


# -- the test -------------------------------------------------------------------------------------


def test_no_import_runs_up_the_layers_and_no_new_import_cycle() -> None:
    found = imports(ROOT)
    assert len(found) > 100 and any(i.in_function for i in found), "the walk found the imports"
    assert set(modules(ROOT)) >= {"facta", "facta.domain", "facta.eventstore.store", "facta.replay.cli",
                                  "facta.migrations.env", "facta.testing"}
    assert problems(ROOT, ALLOWED_CYCLES) == []


def test_every_module_has_a_layer() -> None:
    for module in modules(ROOT):
        assert layer(module) in LAYER_NAMES


# -- the checker on synthetic trees ------------------------------------------------------------------

PYPROJECT = """
[tool.setuptools]
package-dir = { "facta" = "facta_pkg", "facta.domain" = "domain", "facta.eventstore" = "eventstore", "facta.projections" = "projections", "facta.replay" = "replay" }
packages = ["facta", "facta.domain", "facta.eventstore", "facta.projections", "facta.replay"]
"""


def tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    """A source tree with the real package-dir mapping's shape and the given files."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    for folder in ("facta_pkg", "domain", "eventstore", "projections", "replay"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


CLEAN = {
    "domain/events.py": "import json\n",
    "eventstore/store.py": "from facta.domain import events\nfrom .records import X\n",
    "eventstore/records.py": "from ..domain.events import Y\n",
    "projections/runner.py": "from facta.eventstore.store import S\n",
    "replay/cli.py": "import facta.projections.runner\nfrom facta import __version__\n",
    "facta_pkg/testing.py": "from facta.replay import cli\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    root = tree(tmp_path, CLEAN)
    assert problems(root, {}) == []
    targets = {(i.importer, i.imported) for i in imports(root)}
    assert ("facta.eventstore.records", "facta.domain.events") in targets, "a relative import across packages"
    assert ("facta.eventstore.store", "facta.domain.events") in targets, "from a package import a module"
    assert ("facta.replay.cli", "facta") in targets


@pytest.mark.parametrize(("path", "text", "line"), [
    ("domain/events.py", "from facta.eventstore.store import S\n", 1),
    ("domain/events.py", "def f():\n    import facta.projections.runner\n", 2),
    ("eventstore/store.py", "async def f():\n    if True:\n        from ..projections import runner\n", 3),
    ("eventstore/records.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from facta.replay.cli import C\n",
     3),
    ("projections/runner.py", "class K:\n    def m(self):\n        from facta.testing import given\n", 3),
    ("eventstore/store.py", "try:\n    from facta.replay import cli\nexcept ImportError:\n    pass\n", 2),
])
def test_the_checker_names_an_import_up_the_layers(tmp_path: Path, path: str, text: str, line: int) -> None:
    root = tree(tmp_path, CLEAN | {path: text})
    found = problems(root, {})
    [problem] = [p for p in found if not p.startswith("import cycle: ")]  # it may close cycles too
    assert problem.startswith(f"{path}:{line} ") and problem.endswith("a layer above it")


def test_the_checker_names_a_cycle_even_through_a_function_level_import(tmp_path: Path) -> None:
    files = CLEAN | {
        "projections/api.py": "from .runner import R\n",
        "projections/runner.py": "from . import catalog\n",
        "projections/catalog.py": "def load():\n    from facta.projections.api import P\n",
    }
    root = tree(tmp_path, files)
    [problem] = problems(root, {})
    assert problem == (
        "import cycle: facta.projections.api -> facta.projections.runner [projections/api.py:1 (at module level)];"
        " facta.projections.runner -> facta.projections.catalog [projections/runner.py:1 (at module level)];"
        " facta.projections.catalog -> facta.projections.api [projections/catalog.py:2 (in a function)]"
    )
    cycle = ("facta.projections.api", "facta.projections.runner", "facta.projections.catalog")
    assert problems(root, {cycle: "allowed"}) == []
    # A second cycle through the same modules is a new one.
    root = tree(tmp_path / "more", files | {"projections/catalog.py": files["projections/catalog.py"]
                                             + "from .runner import R\n"})
    assert problems(root, {cycle: "allowed"}) == [
        "import cycle: facta.projections.catalog -> facta.projections.runner [projections/catalog.py:3 (at module"
        " level)]; facta.projections.runner -> facta.projections.catalog [projections/runner.py:1 (at module level)]"
    ]


def test_the_checker_names_an_allowed_cycle_that_is_gone(tmp_path: Path) -> None:
    root = tree(tmp_path, CLEAN)
    assert problems(root, {("facta.replay.cli", "facta.replay.demo"): "item 1"}) == [
        "the allowed import cycle facta.replay.cli -> facta.replay.demo is gone: remove it from ALLOWED_CYCLES"
    ]


def test_the_checker_refuses_an_import_of_no_facta_module(tmp_path: Path) -> None:
    root = tree(tmp_path, CLEAN | {"replay/cli.py": "from facta.replay.nothing import x\n"})
    with pytest.raises(AssertionError, match=r"replay/cli\.py:1: imports facta\.replay\.nothing, which is no module"):
        imports(root)


def test_the_real_tree_with_one_bad_import_fails(tmp_path: Path) -> None:
    """A copy of the real source with one function-level import up the layers added."""
    import shutil

    for folder in ("facta_pkg", "domain", "eventstore", "projections", "replay", "dev", "migrations"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert problems(tmp_path, ALLOWED_CYCLES) == []
    aggregate = tmp_path / "domain" / "aggregate.py"
    lines = aggregate.read_text().splitlines()
    aggregate.write_text("\n".join([*lines, "", "", "def _sneaky() -> None:", "    from facta.eventstore import EventStore",
                                    ""]))
    found = problems(tmp_path, ALLOWED_CYCLES)
    [problem] = [p for p in found if not p.startswith("import cycle: ")]  # it closes cycles too
    assert any("facta.domain.aggregate ->" in p for p in found[1:])
    assert problem.startswith(f"domain/aggregate.py:{len(lines) + 4} (in a function): facta.domain.aggregate (domain)"
                              " imports facta.eventstore (eventstore), a layer above it")


def test_a_type_checking_import_counts_for_layers_but_closes_no_cycle(tmp_path: Path) -> None:
    files = CLEAN | {
        "eventstore/_blocks.py": "import typing\nif typing.TYPE_CHECKING:\n    from .store import S\n",
        "eventstore/store.py": "from . import _blocks\n",
    }
    assert problems(tree(tmp_path, files), {}) == []
    files["eventstore/_blocks.py"] = "from .store import S\n"
    [problem] = problems(tree(tmp_path / "runs", files), {})
    assert problem.startswith("import cycle: facta.eventstore._blocks -> facta.eventstore.store")
