"""mypy --strict over leadflow as Python imports it, reporting the repository's own paths.

The packages live in top-level folders mapped by ``[tool.setuptools] package-dir``
(``streams/`` is ``leadflow.streams``). mypy resolves modules from directories, not from the
editable install's import hook, so this builds a throwaway view under ``build/typecheck``
(``leadflow/<folder>`` linking to each folder), runs mypy there and rewrites the paths it
prints back to the files you edit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEW = ROOT / "build" / "typecheck"


def main() -> int:
    """Type-check the view; the exit code is mypy's."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(VIEW, ignore_errors=True)
    top = VIEW / "leadflow"
    top.mkdir(parents=True)
    for module in (ROOT / mapping["leadflow"]).glob("*.py"):
        (top / module.name).symlink_to(module)
    rewrites = [(f"leadflow/{mapping['leadflow']}/", "leadflow/")]
    for package, folder in mapping.items():
        if package == "leadflow":
            continue
        name = package.removeprefix("leadflow.")
        (top / name).symlink_to(ROOT / folder, target_is_directory=True)
        rewrites.append((f"leadflow/{name}/", f"{folder}/"))
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--cache-dir", str(ROOT / ".mypy_cache"), "-p", "leadflow"]
    done = subprocess.run(  # noqa: S603 (our own interpreter running mypy)
        command,
        cwd=VIEW,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        for old, new in rewrites:
            if line.startswith(old):
                line = new + line[len(old) :]
                break
        print(line)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
