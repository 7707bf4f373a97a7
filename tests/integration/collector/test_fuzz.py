"""Property-based fuzzing of the HTTP API with hypothesis, against the running collector.

Whatever arrives, the answer is a documented status with a Problem body naming fields,
never a 5xx; every message is either stored or refused with its reasons; and exactly the
events listed in 2xx answers reach Kafka.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.processors.events import Kind
from leadflow.streams.collector.tracking_plan import KIND_FIELDS, TRACK_KINDS
from tests.integration.collector.conftest import Running, end_offsets

FIELD_NAMES = sorted({spec.name for specs in KIND_FIELDS.values() for spec in specs})
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**31, -(2**63), 10**400])  # edges of int32, long, double
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.one_of(st.uuids().map(str), st.text(max_size=12), st.integers(), st.none())
timestamps = st.one_of(
    st.none(),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["2026-03-01T11:00:00Z", "not a date", "2099-01-01T00:00:00Z"]),
    st.integers(-(2**33), 2**33),
)
properties = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=10), json_values, max_size=6
)
message = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "page", "identify", "alias", "screen", "group"])},
    optional={
        "event": st.sampled_from(sorted(TRACK_KINDS)) | st.text(max_size=20),
        "messageId": ids,
        "userId": st.uuids().map(str) | ids,
        "anonymousId": ids,
        "previousId": ids,
        "groupId": ids,
        "timestamp": timestamps,
        "sentAt": timestamps,
        "properties": properties | json_values,
        "traits": properties,
        "context": st.fixed_dictionaries(
            {},
            optional={
                "page": st.dictionaries(
                    st.sampled_from(["url", "path", "referrer", "title"]), json_values, max_size=3
                ),
                "campaign": st.dictionaries(
                    st.sampled_from(["source", "medium", "name"]), st.text(max_size=10), max_size=3
                ),
                "ip": json_values,
            },
        ),
    },
)
# Plausible messages (mostly valid) keep the 2xx path exercised next to the wild ones.
plausible = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("track"),
            "event": st.text(min_size=1, max_size=30),
            "anonymousId": st.uuids().map(str),
            "properties": st.dictionaries(st.text(max_size=10), json_values, max_size=5),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("page"),
            "userId": st.text(min_size=1, max_size=20),
            "name": st.text(max_size=20),
            "properties": st.dictionaries(
                st.sampled_from(["url", "path", "search"]), st.text(max_size=30), max_size=3
            ),
        },
        optional={"timestamp": st.sampled_from(["2026-03-01T11:00:00Z", "2026-02-01"])},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("identify"),
            "userId": st.uuids().map(str),
            "traits": st.dictionaries(
                st.sampled_from(["email", "company", "title", "country"]),
                st.text(max_size=30),
                max_size=4,
            ),
        }
    ),
)
requests = st.one_of(
    st.tuples(st.sampled_from(["/v1/track", "/v1/page", "/v1/identify", "/v1/alias"]), message),
    st.tuples(st.sampled_from(["/v1/track", "/v1/page", "/v1/identify"]), plausible),
    st.tuples(
        st.just("/v1/batch"),
        st.fixed_dictionaries({"batch": st.lists(plausible, min_size=1, max_size=5)}),
    ),
    st.tuples(
        st.just("/v1/batch"),
        st.fixed_dictionaries(
            {"batch": st.lists(message | plausible | json_values, min_size=1, max_size=5)}
        ),
    ),
    st.tuples(st.sampled_from(["/v1/track", "/v1/batch"]), json_values),
)
PATH = re.compile(r"^(body|batch(\[\d+\])?|sentAt|context|[A-Za-z_]+)([.\[].*)?$")


def test_fuzzed_requests_get_documented_answers(running: Running) -> None:
    before = end_offsets(running.settings)
    accepted: list[int] = []
    client = httpx.Client(base_url=running.url, auth=(running.write_key, ""), timeout=30)

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests)
    def check(request: tuple[str, Any]) -> None:
        path, body = request
        response = client.post(path, content=json.dumps(body))
        answer = response.json()
        assert response.status_code in (200, 400, 413), (response.status_code, answer)
        if response.status_code == 200:
            count = len(body["batch"]) if path == "/v1/batch" else 1
            assert len(answer["event_ids"]) + len(answer["refused"]) == count
            for refusal in answer["refused"]:
                assert refusal["errors"]
                assert all(PATH.match(e["path"]) for e in refusal["errors"]), refusal
            accepted.append(len(answer["event_ids"]))
        else:
            assert answer["success"] is False
            assert answer["errors"]
            assert all(PATH.match(e["path"]) for e in answer["errors"]), answer["errors"]

    try:
        check()
    finally:
        client.close()
    assert accepted, "the fuzzer never produced a valid request: the strategy is too loose"
    after = end_offsets(running.settings)
    assert sum(after.values()) - sum(before.values()) == sum(accepted)


def test_every_planned_track_name_maps_to_its_kind() -> None:
    assert {TRACK_KINDS[name] for name in TRACK_KINDS} == set(Kind) - {
        Kind.VISIT,
        Kind.IDENTIFY,
        Kind.ALIAS,
        Kind.GROUP,
        Kind.CUSTOM,
    }
