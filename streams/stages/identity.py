"""The identity stage: ``leadflow.events`` (keyed by device) -> ``leadflow.events.by-lead``.

A store keyed by the inbound key (``Event.person_key``: device or lead in its workspace)
holds the device's lead (once known) and its buffered pre-identification touches; the
identify or form submit that names the device releases the buffer, re-keyed by
``lead_key``, with the original event ids, and asks for the merges it implies (one
``MergeRequest`` per lead, sent before the event that caused it) (``processors.identity``).
"""

from __future__ import annotations

from leadflow.processors.bounds import BoundsTable, check_bounds
from leadflow.processors.derived import MergeRequest
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, lead_key
from leadflow.processors.identity import (
    check_record_key,
    decode_identity_state,
    encode_identity_state,
    identity_link,
    identity_route,
)
from leadflow.schemas.codec import Codec
from leadflow.streams.engine.stage import Record, Stage, TaskContext
from leadflow.streams.stages.routes import route
from leadflow.streams.topics import EVENTS, EVENTS_BY_LEAD

STORE = "identities"


class IdentityTask:
    """Identity for one partition of ``leadflow.events``."""

    def __init__(self, codec: Codec, bounds: BoundsTable) -> None:
        self.codec = codec
        # Amounts and counts per workspace: an absurd one is a dead letter here, before any
        # state or report sees it (the collector refuses it too; this catches direct producers).
        self.bounds = bounds

    def on_record(self, ctx: TaskContext, record: Record) -> None:
        """Fold one inbound event into its device's identity; forward what it releases."""
        try:
            inbound = self.codec.decode(record.value)
            if not isinstance(inbound, Event):
                raise LeadflowError(f"{type(inbound).__name__} is not an Event")
            check_record_key(record.key, inbound)
            check_bounds(inbound, self.bounds)
            assert record.key is not None  # check_record_key refuses a missing key
            raw = ctx.get(STORE, record.key)
            state = decode_identity_state(raw) if raw else None
            new_state, routed = identity_route(state, inbound)
        except LeadflowError as exc:
            ctx.dead_letter(record, exc)
            return
        link = identity_link(state, new_state, inbound)
        if link is not None:
            topic, key = route(link)
            ctx.send(topic, key, self.codec.encode(link))
        # Merge requests first: they sort before the event that caused them.
        records: list[Event | MergeRequest] = [*routed.merges, *routed.events]
        for out in records:
            assert out.lead_id is not None  # identity_route's contract
            ctx.send(EVENTS_BY_LEAD, lead_key(out.workspace_id, out.lead_id).encode(),
                     self.codec.encode(out))  # fmt: skip
        if new_state is not None and new_state != state:
            ctx.put(STORE, record.key, encode_identity_state(new_state))

    def on_batch_end(self, ctx: TaskContext) -> None:
        """Nothing to do at the end of a batch."""


def identity_stage(codec: Codec, bounds: BoundsTable) -> Stage:
    """The identity stage over ``leadflow.events``."""
    return Stage("identity", EVENTS, (STORE,), lambda ctx: IdentityTask(codec, bounds))
