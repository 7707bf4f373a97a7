"""Consent at the collector (IP/UA per call) and in the worker (stitching from then on)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from leadflow.cli.erase import erase_cmd
from leadflow.processors.events import Context, Event, Kind
from leadflow.processors.identity import IdentityState, identity_link, identity_step
from leadflow.processors.pii import seal_event
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message
from leadflow.streams.collector.models import SegmentContext

DEVICE = {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0"}


def mapped(
    context: dict[str, Any] | None, *, default: bool = False, batch: dict[str, Any] | None = None
) -> Event:
    options = MapOptions(
        workspace_id="ws",
        received_at=1_000,
        future_tolerance_ms=0,
        tracking_consent_default=default,
        context=SegmentContext.model_validate(batch) if batch else None,
    )
    msg: dict[str, Any] = {"anonymousId": "a1", "messageId": "m1"}
    if context is not None:
        msg["context"] = context
    result = map_message(msg, "page", options, new_id=lambda: "x")
    assert isinstance(result, Mapped)
    return result.event


@pytest.mark.parametrize(
    ("context", "default", "kept"),
    [
        (DEVICE, False, False),  # nothing stated: the privacy-preserving default
        (DEVICE, True, True),  # the workspace opted into a consenting default
        ({**DEVICE, "consent": {"tracking": True}}, False, True),
        ({**DEVICE, "consent": {"tracking": False}}, True, False),
        ({**DEVICE, "consent": {"categoryPreferences": {"Analytics": True}}}, False, False),
    ],
)
def test_ip_and_user_agent_only_with_consent(
    context: dict[str, Any], default: bool, kept: bool
) -> None:
    ctx = mapped(context, default=default).context
    assert (ctx.ip, ctx.user_agent) == (("203.0.113.7", "Mozilla/5.0") if kept else (None, None))


def test_the_batch_context_states_consent_for_messages_without_their_own() -> None:
    event = mapped(None, batch={**DEVICE, "consent": {"tracking": True}})
    assert event.context.ip == "203.0.113.7"


def test_consent_changed_states_consent_for_itself() -> None:
    options = MapOptions(workspace_id="ws", received_at=1_000, future_tolerance_ms=0)
    msg = {"event": "Consent Changed", "anonymousId": "a1", "context": DEVICE,
           "properties": {"tracking": True, "marketing": False}}  # fmt: skip
    result = map_message(msg, "track", options, new_id=lambda: "x")
    assert isinstance(result, Mapped)
    assert result.event.context.ip == "203.0.113.7"


def test_a_non_boolean_consent_is_a_field_error() -> None:
    options = MapOptions(workspace_id="ws", received_at=1_000, future_tolerance_ms=0)
    msg = {"anonymousId": "a1", "context": {"consent": {"tracking": "yes please"}}}
    result = map_message(msg, "page", options, new_id=lambda: "x")
    assert isinstance(result, list)
    assert result[0].path == "context.consent.tracking"


def sealed(event_id: str, kind: Kind, at: int, **kw: Any) -> Event:
    """Events as the worker gets them: PII sealed by the collector."""
    event = Event(event_id, kind, "ws", at, at, anonymous_id="a1",
                  context=Context(ip="198.51.100.1"), **kw)  # fmt: skip
    return seal_event(event, lambda ws, subject, f, text: "enc:v2:0badcafe:" + text.encode().hex())


def test_consent_changes_are_honoured_from_then_on_on_sealed_events() -> None:
    state: IdentityState | None = None
    links = []
    script = [
        sealed("v1", Kind.VISIT, 1),
        sealed("f1", Kind.FORM_SUBMITTED, 2, payload={"email": "ada@example.com"}),
        sealed("c1", Kind.CONSENT_CHANGED, 3, payload={"tracking": False}),
        sealed("v2", Kind.VISIT, 4),
        sealed("i2", Kind.IDENTIFY, 5, lead_id="other-lead"),
        sealed("c2", Kind.CONSENT_CHANGED, 6, payload={"tracking": True}),
        sealed("v3", Kind.VISIT, 7),
        sealed("i3", Kind.IDENTIFY, 8, lead_id="other-lead"),
    ]
    emitted: dict[str, Event] = {}
    for event in script:
        before = state
        state, out = identity_step(state, event)
        link = identity_link(before, state, event)
        if link is not None:
            links.append((event.event_id, link.lead_id))
        emitted |= {e.event_id: e for e in out}
    lead = script[1].lead_id  # derived from the email at the collector, before sealing
    # Linked by the form; unlinked by the withdrawal; the identify while withdrawn links
    # nothing; consent given again: the next identify links the device.
    assert links == [("f1", lead), ("i3", "other-lead")]
    assert "v2" not in emitted  # anonymous while withdrawn: not stitched to anyone
    assert emitted["i2"].lead_id == "other-lead"  # declared data still reaches its lead
    assert emitted["i2"].context.ip is None  # but without device data
    assert "v3" in emitted  # the buffer after consent returned is replayed on identify
    assert emitted["v3"].context.ip is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workspace", "ws"], "exactly one of --lead-id or --email"),
        (["--workspace", "ws", "--lead-id", "L", "--email", "a@b.c"], "exactly one of"),
        (["--workspace", "ws", "--email", "not-an-email"], "not an email address"),
        (["--lead-id", "L"], "Missing option '--workspace'"),
    ],
)
def test_erase_refuses_bad_arguments_before_touching_kafka(args: list[str], message: str) -> None:
    result = CliRunner().invoke(erase_cmd, args, obj=None)
    assert result.exit_code == 2
    assert message in result.output
