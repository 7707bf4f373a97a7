#!/usr/bin/env bash
# The wheel built from the repository contains and runs everything: build it, install it in a
# fresh venv (pinned dependencies, nothing from the source tree), import every module, read the
# packaged data and run the commands a user starts with. Called by .ci/run (`make wheel-check`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
out=build/wheel-check
rm -rf "$out" && mkdir -p "$out"
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$out/dist" .
"$PYTHON" -m venv "$out/venv"
"$out/venv/bin/python" -m pip install -q --upgrade pip
"$out/venv/bin/python" -m pip install -q -c constraints.txt "$out"/dist/leadflow-*.whl
cd "$out"  # away from the source tree, so only the installed wheel can be imported
venv/bin/python - <<'PY'
import importlib, pkgutil, leadflow
from importlib import resources
# __main__ is the command itself: importing it runs `leadflow`.
names = [m.name for m in pkgutil.walk_packages(leadflow.__path__, "leadflow.") if m.name != "leadflow.__main__"]
for name in names:
    importlib.import_module(name)
assert all("site-packages" in p for p in leadflow.__path__), leadflow.__path__
for package, path in [
    ("leadflow.infra", "policy/default.yaml"), ("leadflow.infra", "kafka/pom.xml"),
    ("leadflow.infra", "demo-site/index.html"), ("leadflow.infra", "grafana/dashboards/leadflow.json"),
    ("leadflow.schemas", "avsc/events/Visit/v2.avsc"),
]:
    assert resources.files(package).joinpath(path).is_file(), (package, path)
from leadflow.processors.policy_load import load_default_policy
load_default_policy()
print(f"wheel-check: {len(names)} modules import from the installed wheel; packaged data present")
PY
venv/bin/leadflow --help >/dev/null
venv/bin/leadflow demo --help >/dev/null
venv/bin/leadflow report --help >/dev/null
echo "wheel-check: leadflow --help, leadflow demo --help and leadflow report --help run"
