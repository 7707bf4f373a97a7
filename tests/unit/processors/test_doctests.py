import doctest
import importlib

import pytest

MODULES = [
    "policy_load",
    "policy_yaml",
    "identity",
    "funnel",
    "scoring",
    "segments",
    "qualification",
    "nurture",
    "routing",
    "codec",
    "model",
    "features",
    "rescore",
    "handoff",
    "lead",
    "lead_state",
    "labels",
    "deadlines",
    "workspace_id",
    "bounds",
    "bounds_load",
    "events",
    "ordering",
    "policy_fit",
    "frontier",
    "evolve",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"leadflow.processors.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
