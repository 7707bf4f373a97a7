"""The compose stack must only set variables leadflow knows (a typo would be silently ignored)."""

from pathlib import Path

import yaml

from leadflow.streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def leadflow_variables(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {k for k in node if isinstance(k, str) and k.startswith(ENV_PREFIX)}
        for value in node.values():
            found |= leadflow_variables(value)
        return found
    if isinstance(node, list):
        return set().union(*(leadflow_variables(v) for v in node)) if node else set()
    return set()


def test_compose_sets_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    used = leadflow_variables(compose)
    assert used, "the compose file configures leadflow through LEADFLOW_* variables"
    assert used <= known, f"unknown settings in docker-compose.yml: {sorted(used - known)}"


def test_compose_runs_every_part_of_the_stack() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for part in ("kafka", "schema-registry", "clickhouse", "collector", "worker", "grafana"):
        assert part in services
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["worker"]["deploy"]["replicas"] >= 2
