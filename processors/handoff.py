"""The hand-off payload (``leadflow.lead-became-sql``) built from the lead's state.

Built once per SQL transition, from the state AFTER the transition was applied, so the
stage history ends with the SQL step and ``sql_count`` counts this transition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leadflow.processors.derived import BecameSQL, Contact, StageChanged
from leadflow.processors.errors import InvalidTransition
from leadflow.processors.policy import Policy
from leadflow.processors.qualification import qualify
from leadflow.processors.scoring import top_rules

if TYPE_CHECKING:
    from leadflow.processors.lead_state import LeadState


def build_handoff(state: LeadState, change: StageChanged, policy: Policy) -> BecameSQL:
    """Everything a rep needs to open the conversation, for one SQL transition.

    Contact details are included only while the person has not withdrawn tracking
    consent or been erased (firmographics always are: they describe the company).

    Raises:
        InvalidTransition: ``change`` is not a transition into SQL of this lead.
    """
    if change.to_stage.value != "sql" or change.lead_id != state.lead_id:
        raise InvalidTransition(f"lead {state.lead_id}: hand-off needs an SQL transition")
    c = state.contact
    contact = (
        c
        if state.tracking
        else Contact(
            title=c.title,
            seniority=c.seniority,
            company=c.company,
            company_size=c.company_size,
            industry=c.industry,
            country=c.country,
        )
    )
    return BecameSQL(
        transition_id=change.transition_id,
        workspace_id=state.workspace_id,
        lead_id=state.lead_id,
        became_sql_at=change.occurred_at,
        reason=change.reason,
        sql_count=state.sql_count,
        contact=contact,
        segments=state.segments,
        fit_score=round(state.fit, 2),
        engagement_score=round(state.engagement, 2),
        top_rules=top_rules((*state.fit_hits, *state.engagement_hits), policy.scoring.top_rules),
        model_score=state.model_score,
        model_version=state.model_version,
        top_features=state.top_features,
        qualification=qualify(state.answers, policy.qualification.active),
        owner_id=state.owner_id,
        team=state.team,
        first_touch=state.first_touch,
        last_touch=state.last_touch,
        engagement=state.summary,
        stage_history=state.history,
    )
