"""Which contract topic each derived event goes to, and what it is keyed by."""

from __future__ import annotations

from leadflow.processors import derived as d
from leadflow.streams import topics as t

ROUTES: dict[type, tuple[t.TopicSpec, str]] = {
    d.LeadScored: (t.LEAD_SCORED, "lead_id"),
    d.StageChanged: (t.LEAD_STAGE_CHANGED, "lead_id"),
    d.BecameMQL: (t.LEAD_BECAME_MQL, "lead_id"),
    d.BecameSQL: (t.LEAD_BECAME_SQL, "lead_id"),
    d.OwnerAssigned: (t.LEAD_OWNER_ASSIGNED, "lead_id"),
    d.SlaBreached: (t.SLA_BREACHED, "lead_id"),
    d.NurtureAction: (t.NURTURE_ACTIONS, "lead_id"),
    # One trainer per workspace: all of a workspace's examples land on one partition.
    d.TrainingExample: (t.TRAINING_EXAMPLES, "workspace_id"),
    d.IdentityLinked: (t.IDENTITIES, "anonymous_id"),
    d.LeadMerged: (t.LEAD_MERGED, "lead_id"),
}


def route(obj: object) -> tuple[t.TopicSpec, bytes]:
    """The topic and record key of a derived event.

    Example:
        >>> spec, key = route(d.IdentityLinked("ws", "a1", "L1", 5, "e1"))
        >>> spec.name, key
        ('leadflow.identities', b'a1')
    """
    spec, key_field = ROUTES[type(obj)]
    return spec, str(getattr(obj, key_field)).encode()
