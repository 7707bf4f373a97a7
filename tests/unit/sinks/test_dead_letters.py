"""Dead letters as ClickHouse rows: headers only, never the value, the key or a message."""

from __future__ import annotations

import doctest
import json
from types import ModuleType

import pytest

from leadflow.sinks import projection, reports, views
from leadflow.sinks.projection import dead_letter_rows
from leadflow.sinks.tables import DEAD_LETTERS
from leadflow.streams.collector.dead_letters import dead_letter
from leadflow.streams.collector.models import FieldError
from leadflow.streams.engine.loop import dlq_headers


def row(*args: object) -> dict[str, object]:
    (values,) = dead_letter_rows(*args).by_table["dead_letters"]  # type: ignore[arg-type]
    return dict(zip(DEAD_LETTERS.insert_columns, values, strict=True))


def test_collector_refusal_keeps_workspace_reason_and_field_names_only() -> None:
    raw = {"userId": "ada@example.com", "traits": {"email": "ada@example.com",
           "company_size": "51-200"}}  # fmt: skip
    errors = [
        FieldError(path="batch[7].traits.company_size", message="'51-200' is not an integer"),
        FieldError(path="batch[7].traits.company_size", message="again"),
        FieldError(path="batch[7].context.ada@example.com", message="?"),
    ]
    letter = dead_letter(raw, "invalid", errors, workspace_id="acme", source="/v1/batch",
                         index=7, received_at=1_000)  # fmt: skip
    r = row(2, 41, letter.key, list(letter.headers), 1_005, len(letter.value))
    assert (r["dlq_id"], r["workspace_id"], r["stage"], r["reason"]) == (
        "2:41",
        "acme",
        "collector",
        "invalid",
    )
    assert r["fields"] == ["<redacted>", "traits.company_size"]
    assert (r["source_topic"], r["received_at"], r["bytes"]) == (
        "/v1/batch",
        1_005,
        len(letter.value),
    )
    assert "ada" not in repr(r)
    assert "51-200" not in repr(r)


def test_worker_refusal_keeps_the_exception_type_and_the_keys_workspace() -> None:
    headers = dlq_headers(ValueError("lead L7 of ada@example.com"), "leadflow.events", 3, 9)
    r = row(0, 1, b'["acme","anon-1"]', list(headers.items()), 5, 0)
    assert (r["workspace_id"], r["stage"], r["reason"], r["source_topic"]) == (
        "acme",
        "worker",
        "ValueError",
        "leadflow.events",
    )
    assert "ada" not in repr(r)
    assert "anon-1" not in repr(r)


def test_projector_refusal_and_unreadable_headers() -> None:
    projector = [("reason", b"bad_magic"), ("error", b"not a leadflow record"),
                 ("stage", b"projector"), ("group", b"leadflow-projector"),
                 ("source.topic", b"leadflow.lead-scored")]  # fmt: skip
    r = row(0, 2, b'["acme","L1"]', projector, 5, 3)
    assert (r["workspace_id"], r["stage"], r["reason"]) == ("acme", "projector", "bad_magic")
    junk = row(0, 3, b"\xff\xfe", [("stage", b"martian"), ("error", b"{not json")], 5, 0)
    assert (junk["workspace_id"], junk["stage"], junk["fields"]) == ("", "unknown", [])


def test_an_unscoped_key_names_no_workspace() -> None:
    r = row(0, 4, json.dumps({"ws": "x"}).encode(), [("leadflow.reason", b"E: m")], 5, 0)
    assert r["workspace_id"] == ""


@pytest.mark.parametrize("module", [projection, views, reports])
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
