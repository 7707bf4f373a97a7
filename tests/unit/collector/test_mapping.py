"""Segment message -> Event: field mapping, error paths, and round trips through the codec."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from leadflow.processors.bounds import BOUNDED, Bounds
from leadflow.processors.events import Event, Kind
from leadflow.processors.pii import PII_PAYLOAD_FIELDS
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message
from leadflow.streams.collector.models import FieldError
from leadflow.streams.collector.tracking_plan import KIND_FIELDS, TRACK_KINDS, FieldSpec, FieldType

RECEIVED = 1_772_366_400_000
OPTS = MapOptions(workspace_id="ws", received_at=RECEIVED, future_tolerance_ms=300_000)
CODEC = SingleObjectCodec()
NAME_OF = {kind: name for name, kind in TRACK_KINDS.items()}


def ok(raw: dict[str, Any], msg_type: str = "track", **opts: Any) -> Mapped:
    options = dataclasses.replace(OPTS, **opts)
    result = map_message(raw, msg_type, options, new_id=lambda: "generated", prefix="")
    assert isinstance(result, Mapped), result
    return result


def errors(raw: Any, msg_type: str = "track", prefix: str = "") -> list[tuple[str, str]]:
    result = map_message(raw, msg_type, OPTS, new_id=lambda: "generated", prefix=prefix)
    assert isinstance(result, list), result
    return [(e.path, e.message) for e in result]


def value_for(spec: FieldSpec, kind: Kind | None = None) -> st.SearchStrategy[Any]:
    if spec.choices:
        return st.sampled_from(sorted(spec.choices))
    bounded = dict(BOUNDED.get(kind, ())) if kind is not None else {}
    if spec.name in bounded:  # valid events keep amounts and counts within their bounds
        allowed = getattr(Bounds(), bounded[spec.name])
        if spec.type is FieldType.INT:
            return st.integers(int(allowed.min), int(allowed.max))
        return st.floats(allowed.min, allowed.max)
    if spec.name in PII_PAYLOAD_FIELDS:  # "enc:" is reserved for what the collector sealed
        return st.text(max_size=20).filter(lambda t: not t.startswith("enc:"))
    return {
        FieldType.STRING: st.text(max_size=20),
        FieldType.INT: st.integers(-(2**31), 2**31 - 1),
        FieldType.DOUBLE: st.floats(allow_nan=False, allow_infinity=False),
        FieldType.BOOLEAN: st.booleans(),
        FieldType.STRING_MAP: st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        FieldType.DATE: st.dates().map(lambda d: d.isoformat()),
    }[spec.type]


@st.composite
def planned_track(draw: st.DrawFn) -> tuple[Kind, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(TRACK_KINDS.values())))
    props = {}
    for spec in KIND_FIELDS[kind]:
        if spec.required or draw(st.booleans()):
            props[spec.name] = draw(value_for(spec, kind))
    return kind, {
        "event": NAME_OF[kind],
        "userId": draw(st.text(min_size=1, max_size=10)),
        "properties": props,
    }


@given(planned_track())
def test_planned_events_map_and_survive_the_codec(case: tuple[Kind, dict[str, Any]]) -> None:
    kind, raw = case
    event = ok(raw).event
    assert event.kind is kind
    for spec in KIND_FIELDS[kind]:
        sent = raw["properties"].get(spec.name)
        expected = spec.default if sent is None else sent
        assert event.payload[spec.name] == expected
    assert CODEC.decode(CODEC.encode(event)) == event
    assert ok(raw).event == event  # deterministic


WRONG: dict[FieldType, list[Any]] = {
    FieldType.STRING: [[1], {"a": [1]}, 1.5, True, 7],
    FieldType.INT: [[1], "text", 1.5, True, {"a": 1}],
    FieldType.DOUBLE: [[1], "text", True, {"a": 1}],
    FieldType.BOOLEAN: [[1], "text", 1.5, 0, "true"],
    FieldType.STRING_MAP: [[1], "text", 1.5, True, {"a": [1]}, {"a": None}],
    FieldType.DATE: [[1], 1.5, True, "text", "2026-13-01", "20260101"],
}


@given(st.sampled_from(sorted(TRACK_KINDS.values())), st.data())
def test_a_wrong_type_is_named_by_its_path(kind: Kind, data: st.DataObject) -> None:
    spec = data.draw(st.sampled_from(KIND_FIELDS[kind]))
    wrong = data.draw(st.sampled_from(WRONG[spec.type]))
    # An object under "company" is Segment's company object ({name, employee_count...}):
    # its members are read, not refused (test_trackers.py covers it).
    assume(not (spec.name == "company" and isinstance(wrong, dict)))
    raw = {
        "type": "track",
        "event": NAME_OF[kind],
        "anonymousId": "a",
        "properties": {spec.name: wrong},
    }
    paths = [p for p, _ in errors(raw, prefix="batch[7]")]
    where = f"batch[7].properties.{spec.name}"
    assert any(p == where or p.startswith(where + ".") for p in paths), paths


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=6,
        ),
    )
)
def test_custom_events_keep_every_property(props: dict[str, Any]) -> None:
    # channel/experiment/variant also feed the context, so they must be text.
    assume(all(isinstance(props.get(k), str | None) for k in ("channel", "experiment", "variant")))
    event = ok({"event": "Pricing Calculator Used", "anonymousId": "a", "properties": props}).event
    assert event.kind is Kind.CUSTOM
    assert event.payload["name"] == "Pricing Calculator Used"
    assert json.loads(event.payload["properties_json"]) == props


def test_identify_traits_and_segment_aliases() -> None:
    mapped = ok(
        {
            "userId": "u",
            "anonymousId": "a",
            "traits": {"firstName": "Ada", "last_name": "L", "company_size": 12.0, "plan": "pro"},
        },
        "identify",
    )
    assert mapped.event.payload["first_name"] == "Ada"
    assert mapped.event.payload["company_size"] == 12
    assert (mapped.kept, mapped.ignored) == (("traits.plan",), ())
    assert json.loads(mapped.event.payload["extra_json"]) == {"traits": {"plan": "pro"}}
    assert (mapped.event.lead_id, mapped.event.anonymous_id) == ("u", "a")


def test_alias_and_group() -> None:
    alias = ok({"previousId": "anon-1", "userId": "lead-1"}, "alias").event
    assert (alias.kind, dict(alias.payload), alias.lead_id) == (
        Kind.ALIAS,
        {"previous_id": "anon-1"},
        "lead-1",
    )
    # Segment's group traits are the account's firmographics (the lead takes them over).
    group = ok(
        {
            "groupId": "acme",
            "userId": "u",
            "traits": {
                "name": "Acme Corp",
                "employees": "51-200",
                "industry": "Software",
                "plan": "enterprise",
                "website": "acme.example",
                "address": {"country": "DE", "city": "Berlin"},
                "mrr": 4200,
            },
        },
        "group",
    )
    assert group.event.kind is Kind.GROUP
    assert dict(group.event.payload) == {
        "group_id": "acme",
        "company": "Acme Corp",
        "company_size": 51,
        "industry": "Software",
        "country": "DE",
        "plan": "enterprise",
        "website": "acme.example",
        "extra_json": '{"traits":{"address":{"city":"Berlin"},"mrr":4200}}',
    }
    assert sorted(group.kept) == ["traits.address.city", "traits.mrr"]
    assert [w.path for w in group.warnings] == ["traits.company_size"]
    assert CODEC.decode(CODEC.encode(group.event)) == group.event
    # A company trait wins over name; a group without traits is still the account.
    both = ok({"groupId": "g", "userId": "u", "traits": {"company": "A", "name": "B"}}, "group")
    assert (both.event.payload["company"], both.kept) == ("A", ("traits.name",))
    bare = ok({"groupId": "g", "anonymousId": "a"}, "group").event
    assert (bare.payload["group_id"], bare.payload["company"]) == ("g", None)
    assert errors({"userId": "u", "traits": {"name": "A"}}, "group") == [
        ("groupId", "Field required")
    ]


def test_page_context_campaign_and_utm_from_url() -> None:
    event = ok(
        {
            "anonymousId": "a",
            "name": "Pricing",
            "properties": {
                "url": "https://a.io/pricing?utm_source=google&utm_medium=cpc&utm_campaign=brand",
                "path": "/pricing",
                "title": "Pricing",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=google",
                "category": "Docs",
                "variant": "b",
            },
        },
        "page",
    ).event
    ctx = event.context
    assert (ctx.utm_source, ctx.utm_medium, ctx.utm_campaign) == ("google", "cpc", "brand")
    assert (ctx.path, ctx.title, ctx.channel, ctx.variant) == (
        "/pricing",
        "Pricing",
        "paid_search",
        "b",
    )
    assert dict(event.payload) == {
        "name": "Pricing",
        "category": "Docs",
        "search": "?utm_source=google",
        "extra_json": None,
    }


def test_skew_correction_uses_the_batch_sent_at_when_the_message_has_none() -> None:
    raw = {"anonymousId": "a", "timestamp": "2026-03-01T11:00:00Z"}
    assert ok(raw, "page").event.occurred_at == RECEIVED - 3_600_000
    # Client clock 2 minutes slow: the batch was "sent" at 11:58 when it was 12:00.
    assert ok(raw, "page", sent_at=RECEIVED - 120_000).event.occurred_at == (
        RECEIVED - 3_600_000 + 120_000
    )
    assert (
        ok(
            {**raw, "sentAt": "2026-03-01T12:00:00Z"}, "page", sent_at=RECEIVED - 120_000
        ).event.occurred_at
        == RECEIVED - 3_600_000
    )
    assert (
        ok(
            {"anonymousId": "a", "originalTimestamp": "2026-03-01T11:00:00Z"}, "page"
        ).event.occurred_at
        == RECEIVED - 3_600_000
    )


@pytest.mark.parametrize(
    ("raw", "msg_type", "expected"),
    [
        ({"event": "Deal Won", "userId": "u"}, "track", [("properties.amount", "required")]),
        (
            {"event": "Deal Won", "properties": {"amount": 1}},
            "track",
            [("userId", "anonymousId or userId is required")],
        ),
        (
            {"event": "Deal Won", "userId": "u", "properties": {"amount": "lots"}},
            "track",
            [("properties.amount", "expected a number, got string")],
        ),
        (
            {"event": "Webinar Attended", "userId": "u", "properties": {"minutes_attended": 1.5}},
            "track",
            [("properties.minutes_attended", "expected an integer, got number")],
        ),
        (
            {"event": "Consent Changed", "userId": "u", "properties": {"tracking": "yes"}},
            "track",
            [("properties.tracking", "expected true or false, got string")],
        ),
        (
            {"event": "Form Submitted", "userId": "u", "properties": {"channel": 5}},
            "track",
            [("properties.channel", "expected a string, got integer")],
        ),
        (
            # A page call's own url/path/referrer/title were read as absent when not strings.
            {"userId": "u", "properties": {"title": 404, "url": ["https://a.example/"]}},
            "page",
            [
                ("properties.title", "expected a string, got integer"),
                ("properties.url", "expected a string, got array"),
            ],
        ),
        (
            {"userId": "u", "timestamp": "1960-01-01T00:00:00Z"},
            "page",
            [("timestamp", "before 1970")],
        ),
        ({"userId": "u"}, "screen_view", [("type", "unknown type 'screen_view'")]),
    ],
)
def test_validation_messages(
    raw: dict[str, Any], msg_type: str, expected: list[tuple[str, str]]
) -> None:
    assert errors(raw, msg_type) == expected


def test_a_future_timestamp_within_tolerance_is_fine_and_skew_can_rescue_it() -> None:
    assert ok({"userId": "u", "timestamp": "2026-03-01T12:05:00Z"}, "page")
    # The device clock is a day ahead, but sentAt says so: corrected to the past.
    event = ok(
        {"userId": "u", "timestamp": "2026-03-02T11:00:00Z", "sentAt": "2026-03-02T12:00:00Z"},
        "page",
    ).event
    assert event.occurred_at == RECEIVED - 3_600_000


def test_strict_mode_names_unknown_properties() -> None:
    result = map_message(
        {"event": "Deal Won", "userId": "u", "properties": {"amount": 1, "amount_eur": 2}},
        "track",
        MapOptions("ws", RECEIVED, 0, strict=True),
        lambda: "x",
        "batch[0]",
    )
    assert result == [
        FieldError(
            path="batch[0].properties.amount_eur", message="not in the tracking plan for deal_won"
        )
    ]


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda n: n not in {"amount", "deal_id"}),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=5,
        ),
        max_size=4,
    )
)
def test_unknown_properties_of_a_known_kind_are_kept_whole(extra: dict[str, Any]) -> None:
    props = {**extra, "amount": 5}
    for name in ("channel", "experiment", "variant", "currency", "revenue", "value", "total"):
        props.pop(name, None)  # consumed by the context or the kind
    mapped = ok({"event": "Deal Won", "userId": "u", "properties": props})
    unknown = {k: v for k, v in props.items() if k != "amount"}
    assert sorted(mapped.kept) == sorted(f"properties.{k}" for k in unknown)
    stored = mapped.event.payload["extra_json"]
    assert (json.loads(stored) if stored else {}) == ({"properties": unknown} if unknown else {})
    assert mapped.ignored == ()
    assert CODEC.decode(CODEC.encode(mapped.event)) == mapped.event


def test_page_form_and_identify_keep_what_has_no_field_where_it_was_found() -> None:
    page = ok(
        {"anonymousId": "a", "properties": {"url": "https://x.example/", "keywords": ["b2b"],
         "tab_url": "https://x.example/#t", "name": "Home"}},
        "page",
    )  # fmt: skip
    assert json.loads(page.event.payload["extra_json"]) == {
        "properties": {"keywords": ["b2b"], "tab_url": "https://x.example/#t"}
    }
    form = ok(
        {
            "event": "Form Submitted",
            "anonymousId": "a",
            "properties": {"form_id": "demo", "email": "a@b.example", "linkedin": "in/ada"},
            "context": {"traits": {"plan": "pro", "company": {"name": "Acme", "id": "c-1"}}},
        }
    )
    assert form.event.payload["company"] == "Acme"
    assert json.loads(form.event.payload["extra_json"]) == {
        "context": {"traits": {"company": {"id": "c-1"}, "plan": "pro"}},
        "properties": {"linkedin": "in/ada"},
    }
    assert sorted(form.kept) == [
        "context.traits.company.id",
        "context.traits.plan",
        "properties.linkedin",
    ]
    # RudderStack's node SDK repeats identify traits in context.traits: each place keeps its own.
    identify = ok(
        {"userId": "u", "traits": {"title": "CTO", "channel": "web"},
         "context": {"traits": {"title": "CTO", "channel": "web"}}},
        "identify",
    )  # fmt: skip
    assert json.loads(identify.event.payload["extra_json"]) == {
        "context": {"traits": {"channel": "web"}},
        "traits": {"channel": "web"},
    }
    assert identify.event.context.channel is None  # a trait is not the marketing channel


def test_what_cannot_be_stored_is_dropped_and_listed() -> None:
    cost = ok(
        {"event": "Campaign Cost", "anonymousId": "x",
         "properties": {"date": "2026-03-01", "channel": "paid_search", "amount": 10,
                        "clicks": 120}},
    )  # fmt: skip
    # A campaign cost belongs to no person: no key could seal its extras.
    assert (cost.kept, cost.ignored) == ((), ("properties.clicks",))
    assert "extra_json" not in cost.event.payload
    batch = map_message(
        {"event": "Email Opened", "userId": "u", "properties": {"subject": "Hi", "inbox": "x"},
         "context": {"device": {"id": "d"}, "traits": {"email": "a@b.example"}}},
        "track",
        dataclasses.replace(OPTS, context=None),
        lambda: "x",
        "batch[2]",
    )  # fmt: skip
    assert isinstance(batch, Mapped)
    assert batch.kept == ("batch[2].properties.inbox",)
    assert batch.ignored == ("batch[2].context.device", "batch[2].context.traits")


def test_strict_mode_refuses_every_member_it_would_keep() -> None:
    result = map_message(
        {"userId": "u", "traits": {"title": "CTO", "company": {"name": "A", "plan": "pro"}}},
        "identify",
        MapOptions("ws", RECEIVED, 0, strict=True),
        lambda: "x",
    )
    assert result == [
        FieldError(path="traits.company.plan", message="not in the tracking plan for identify")
    ]


def test_message_id_becomes_the_event_id_else_a_new_one() -> None:
    assert ok({"event": "X", "userId": "u", "messageId": "m-1"}).event.event_id == "m-1"
    assert ok({"event": "X", "userId": "u"}).event.event_id == "generated"


def test_person_key_prefers_the_device() -> None:
    event: Event = ok({"event": "X", "userId": "u", "anonymousId": "a"}).event
    assert event.person_id == "a"
    assert event.person_key == '["ws","a"]'
