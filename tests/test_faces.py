"""Each package's public face is deliberate (issue 11, item 7): its ``__all__`` lists
exactly what it offers (names, and public modules with an ``__all__`` of their own), and
what the README, ARCHITECTURE.md and the tests import from a package is on its face."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "facta", "facta.domain", "facta.eventstore", "facta.projections", "facta.replay", "facta.migrations",
    "facta.eventsourcing",
]
#: The public modules, each on its package's face; every other module is implementation.
PUBLIC_MODULES = {
    "facta": {"migrations", "testing"},
    "facta.domain": {"reference"},
    "facta.eventstore": {"audit", "blocking", "integrity", "kafka_codec", "merkle", "personal_data", "relay", "schema", "sealer"},
    "facta.projections": {"reference", "replay"},
    "facta.replay": set(),
    "facta.migrations": set(),
    "facta.eventsourcing": {"events", "persistence"},
}


def _is_module(package: str, name: str) -> bool:
    return importlib.util.find_spec(f"{package}.{name}") is not None


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_the_whole_face(package: str) -> None:
    module = importlib.import_module(package)
    face = module.__all__
    assert len(face) == len(set(face)), f"{package}.__all__ names something twice"
    modules = {name for name in face if _is_module(package, name)}
    assert modules == PUBLIC_MODULES[package], f"{package}'s public modules"
    for name in modules:
        public = importlib.import_module(f"{package}.{name}")
        assert isinstance(getattr(public, "__all__", None), list), f"{package}.{name} has no __all__"
        for inner in public.__all__:
            assert hasattr(public, inner), f"{package}.{name}.__all__ names {inner!r}, which it lacks"
    for name in set(face) - modules:
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which it lacks"
    # Nothing facta defines is offered by accident: every public name the package binds
    # to one of facta's own objects is on the face (imports of other libraries are not).
    offered = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("facta")
    }
    assert offered <= set(face), f"{package} binds {sorted(offered - set(face))} outside __all__"


def test_the_reference_domain_is_its_own_module() -> None:
    import facta.domain
    import facta.domain.reference as reference

    for name in ("Account", "Ride", "TripEnded", "Deposited", "Location", "Tariff", "transfer"):
        assert name in reference.__all__ and name not in facta.domain.__all__
        assert name not in vars(facta.domain), f"facta.domain still offers {name}"
    assert reference.Account.stream_type == "account" and reference.Ride.stream_type == "ride"


def _imports(source: str) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("facta"):
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def _documented_imports() -> list[tuple[str, str, list[str]]]:
    found = []
    for doc in ("README.md", "ARCHITECTURE.md"):
        text = (ROOT / doc).read_text()
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            found += [(doc, module, names) for module, names in _imports(block)]
        for module, names in re.findall(r"`from (facta[\w.]*) import ([\w, ]+)`", text):
            found.append((doc, module, [n.strip() for n in names.split(",")]))
    return found


def test_the_docs_import_only_public_faces() -> None:
    checked = 0
    for doc, module, names in _documented_imports():
        package, _, last = module.rpartition(".")
        if module in PACKAGES:
            face = importlib.import_module(module).__all__
        else:  # a public module
            assert package in PACKAGES and last in PUBLIC_MODULES[package], f"{doc} imports from {module}"
            face = importlib.import_module(module).__all__
        for name in names:
            assert name in face, f"{doc}: {name} is not on {module}'s face"
            checked += 1
    assert checked >= 20


def test_the_tests_import_from_a_package_only_its_face_or_its_modules() -> None:
    """The tests may open a package's implementation modules (white-box), but a name
    taken from a package itself must be on its face."""
    problems = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for module, names in _imports(path.read_text()):
            if module not in PACKAGES:
                continue
            face = importlib.import_module(module).__all__
            problems += [f"{path.relative_to(ROOT)}: from {module} import {name}" for name in names
                         if name not in face and not _is_module(module, name)]
    assert problems == []
