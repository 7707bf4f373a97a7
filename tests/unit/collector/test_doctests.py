"""The collector's docstring examples run (they document the wire shapes by example)."""

import doctest
import importlib

import pytest

pytestmark = pytest.mark.unit

MODULES = [
    "app",
    "channels",
    "dead_letters",
    "limits",
    "mapping",
    "pixel",
    "tracking_plan",
    "traits",
    "webhooks.postmark",
    "webhooks.replay",
    "webhooks.ses",
    "webhooks.signatures",
    "webhooks.vendors",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"leadflow.streams.collector.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
