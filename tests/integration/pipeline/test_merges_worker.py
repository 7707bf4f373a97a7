"""The worker merges a form-then-identify person (issue 14), through the real broker.

The email lead hands its state to the user and redirects, and ``leadflow.lead-merged``
says so. (The order the worker applies records in is tested on the real tasks under
arbitrary schedules in ``tests/unit/streams/test_release_order.py``.)
"""

from __future__ import annotations

import uuid

from leadflow.processors.derived import BecameSQL, LeadMerged
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.settings import Settings
from leadflow.streams.topics import LEAD_BECAME_SQL, LEAD_MERGED
from tests.unit.demo import journey

from .conftest import WorkerProcess, read, send


def test_form_then_identify_is_merged_by_the_worker(
    topics: Settings, worker: WorkerProcess
) -> None:
    workspace = f"ws-merge-{uuid.uuid4().hex[:6]}"
    events = journey.events(workspace=workspace)
    send(topics, events)
    [merged] = read(topics, LEAD_MERGED.name, workspace, expect=1)
    assert isinstance(merged, LeadMerged)
    assert (merged.lead_id, merged.merged_lead_id, merged.reason) == (
        journey.USER,
        derive_lead_id(workspace, journey.EMAIL),
        "identify",
    )
    # Sales accepted the person: one hand-off, for the survivor.
    [handoff] = read(topics, LEAD_BECAME_SQL.name, workspace, expect=1)
    assert isinstance(handoff, BecameSQL)
    assert handoff.lead_id == journey.USER
