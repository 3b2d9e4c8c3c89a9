"""The library type-checks with mypy --strict.

mypy cannot follow setuptools' package-dir mapping, so the test lays the source folders
out as they are installed (``facta/domain`` -> ``domain/``, ...) with symlinks first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("domain", "eventstore", "projections", "replay", "migrations")


@pytest.mark.slow
def test_library_passes_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    package = tmp_path / "facta"
    package.mkdir()
    for module in (ROOT / "facta_pkg").glob("*.py"):
        shutil.copy(module, package / module.name)
    for folder in FOLDERS:
        (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "facta"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
