"""The library type-checks with mypy --strict, and so does a user's module against the
installed package: a regular install and the README's editable install (issue 10, item 16).

mypy cannot follow setuptools' package-dir mapping in the source tree, so the first test
lays the source folders out as they are installed (``facta/domain`` -> ``domain/``, ...)
with symlinks first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("domain", "eventstore", "projections", "replay", "dev", "migrations")
# Folders installed under another name (pyproject's package-dir): es/ is facta.eventsourcing.
RENAMED = {"es": "eventsourcing"}
PACKAGES = ("facta_pkg", *FOLDERS, *RENAMED, "migrations/versions")

# A user's module: events, an aggregate, a projection, a repository round trip. Every
# class keyword (name=, version=, stream_type=) must type-check, and the reveal_type lines
# prove mypy saw facta's own annotations rather than Any.
USER_MODULE = textwrap.dedent('''
    from sqlalchemy import Column, Integer, String

    from facta.domain import Aggregate, AggregateState, DomainError, DomainEvent, applies
    from facta.eventstore import EventStore, RecordedEvent, Repository
    from facta.projections import Projection, ReadModel, handles, read_model_table


    class ItemAdded(DomainEvent, name="shop.item_added", version=2):
        sku: str
        quantity: int


    class Cart(Aggregate, stream_type="shop_cart"):
        class State(AggregateState):
            items: dict[str, int] = {}

        def add(self, sku: str, quantity: int) -> None:
            if quantity <= 0:
                raise DomainError(f"cart {self.id}: quantity must be positive")
            self._emit(ItemAdded(sku=sku, quantity=quantity))

        @applies(ItemAdded)
        def _added(self, event: ItemAdded) -> None:
            self.state.items = {**self.state.items, event.sku: event.quantity}


    class CartSizes(Projection, name="cart_sizes"):
        sizes = read_model_table("cart_sizes", Column("cart_id", String(255), primary_key=True),
                                 Column("items", Integer, nullable=False))

        @handles(ItemAdded)
        def _added(self, rm: ReadModel, event: ItemAdded, record: RecordedEvent) -> None:
            rm.upsert(self.sizes, {"cart_id": record.stream_id}, set={"items": event.quantity})


    async def main() -> int:
        async with await EventStore.open("sqlite:///./shop.db", migrate=True) as store:
            carts = Repository(store)
            cart = Cart("cart-1")
            cart.add("apple", 3)
            await carts.save(cart, actor="alice")
            loaded = await carts.get(Cart, "cart-1")
            reveal_type(loaded)
            reveal_type(await store.head_position())
            return loaded.version
''')


def _mypy(python: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    (cwd / "shop.py").write_text(USER_MODULE)
    return subprocess.run(
        [python, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(cwd / ".mypy_cache"), "shop.py"],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
    )


def _venv_with_facta(tmp_path: Path, *pip_args: str) -> str:
    """A venv seeing the system's packages (mypy, pydantic, ...) with facta from a copy of
    this checkout installed by ``pip install --no-deps *pip_args``; its python."""
    source = tmp_path / "facta-src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".pytest_cache", ".hypothesis", "*.db*"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *pip_args], cwd=source,
                             capture_output=True, text=True, timeout=600, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert 'Revealed type is "shop.Cart"' in out and 'Revealed type is "int"' in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert errors == [], out
    assert "py.typed" not in out and "__init_subclass__" not in out, out


@pytest.mark.slow
def test_library_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    package = tmp_path / "facta"
    package.mkdir()
    for module in (ROOT / "facta_pkg").glob("*.py"):  # __init__.py, testing.py
        shutil.copy(module, package / module.name)
    for folder in FOLDERS:
        (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
    for folder, name in RENAMED.items():
        (package / name).symlink_to(ROOT / folder, target_is_directory=True)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "facta"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_ships_py_typed() -> None:
    assert [p for p in PACKAGES if not (ROOT / p / "py.typed").is_file()] == []
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ("facta", "facta.domain", "facta.eventstore", "facta.projections", "facta.replay",
                    "facta.migrations", "facta.migrations.versions", "facta.eventsourcing"):
        line = next(line for line in pyproject.splitlines() if line.startswith(f'"{package}" = ['))
        assert '"py.typed"' in line, line


@pytest.mark.slow
def test_a_user_module_type_checks_against_a_regular_install(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    python = _venv_with_facta(tmp_path, ".")
    user = tmp_path / "user"
    user.mkdir()
    _assert_clean(_mypy(python, user))


@pytest.mark.slow
def test_a_user_module_type_checks_against_the_readme_editable_install(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    readme = (ROOT / "README.md").read_text()
    setup = next(line for line in readme.splitlines() if line.startswith("pip install -e . ") and "facta demo" in line)
    pip_args = setup.removeprefix("pip install ").split(" && ")[0].split()
    assert "editable_mode=strict" in pip_args, setup
    python = _venv_with_facta(tmp_path, *pip_args)
    user = tmp_path / "user"
    user.mkdir()
    _assert_clean(_mypy(python, user))
    # It is an editable install: the venv imports the copy's source files.
    where = subprocess.run([python, "-c", "import facta.domain, os; print(os.path.realpath(facta.domain.__file__))"],
                           cwd=user, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert where == str(tmp_path / "facta-src" / "domain" / "__init__.py")


@pytest.mark.slow
def test_pyright_if_installed(tmp_path: Path) -> None:
    pyright = shutil.which("pyright")
    if pyright is None:
        pytest.skip("pyright is not installed (facta does not depend on it)")
    python = _venv_with_facta(tmp_path, ".")
    user = tmp_path / "user"
    user.mkdir()
    (user / "shop.py").write_text(USER_MODULE.replace("reveal_type(", "print("))
    result = subprocess.run([pyright, "--pythonpath", python, "shop.py"], cwd=user, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
