"""The package map in pyproject.toml covers every package folder (the wheel check runs in CI)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]

pytestmark = pytest.mark.unit


def test_every_package_folder_is_in_the_wheel() -> None:
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == set(SETUPTOOLS["packages"])


def test_no_symlinked_package_folders() -> None:
    # Tools that read the import graph from the tree (mypy, IDEs, tracebacks, coverage) see
    # each file once, under the path that is edited.
    assert not [p for p in (ROOT / "leadflow").iterdir() if p.is_symlink()]


def test_production_code_never_imports_the_demo_or_the_command_line() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("streams", "processors", "sinks", "schemas")
        for path in (ROOT / folder).rglob("*.py")
        if "leadflow.demo" in path.read_text() or "leadflow.cli" in path.read_text()
    ]
    assert offenders == []
