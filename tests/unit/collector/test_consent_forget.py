"""Issue 19: a consent change through the tracking API cannot delete.

``Consent Changed`` with ``tracking: false`` dropped the device's buffered anonymous touches
and unlinked it, whoever sent it: anyone with the public write key and a device id could make
a person's touches disappear. The collector now marks every consent change it maps as
``forget: false`` (a pause), and a client cannot say otherwise.
"""

from __future__ import annotations

import io

from fastavro import schemaless_writer

from leadflow.processors.events import Event, Kind
from leadflow.schemas.catalog import load_catalog
from leadflow.schemas.codec import SingleObjectCodec
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message

OPTS = MapOptions(workspace_id="ws", received_at=61_000, future_tolerance_ms=0)
CODEC = SingleObjectCodec()


def test_a_write_keys_withdrawal_is_a_pause_whatever_the_client_says() -> None:
    for claim in ({}, {"forget": True}, {"forget": "yes"}):
        raw = {"event": "Consent Changed", "anonymousId": "shared-dev-1",
               "properties": {"tracking": False, **claim}}  # fmt: skip
        mapped = map_message(raw, "track", OPTS, new_id=lambda: "x")
        assert isinstance(mapped, Mapped), mapped
        assert mapped.event.payload["forget"] is False
        assert CODEC.decode(CODEC.encode(mapped.event)).payload["forget"] is False


def test_consent_changes_written_before_v3_read_as_forget_true() -> None:
    # The log's older records replay exactly as before: their withdrawal deletes.
    versions = load_catalog().versions["io.leadflow.events.ConsentChanged"]
    assert [v.version for v in versions] == [1, 2, 3]
    v1 = versions[0]
    context = {f["name"]: None for f in v1.raw["fields"][6]["type"]["fields"]}
    record = {"event_id": "c1", "workspace_id": "ws", "occurred_at": 1, "received_at": 1,
              "anonymous_id": "a1", "lead_id": None, "context": context, "tracking": False,
              "marketing": None}  # fmt: skip
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, record)
    event = CODEC.decode(b"\xc3\x01" + v1.fingerprint + body.getvalue())
    assert isinstance(event, Event)
    assert event.kind is Kind.CONSENT_CHANGED
    assert event.payload["forget"] is True
    # So do events produced without the collector (trusted producers; default true).
    direct = Event("d", Kind.CONSENT_CHANGED, "ws", 1, 1, "a1", payload={"tracking": False})
    assert CODEC.decode(CODEC.encode(direct)).payload["forget"] is True
