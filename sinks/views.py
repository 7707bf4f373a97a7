"""The analyst-facing views, as SQL templates (``$db`` is the database, ``$oc`` ON CLUSTER).

Naming: ``v_<table>`` reads one table deduplicated (``FINAL`` or ``GROUP BY`` the id), so a
duplicate that ClickHouse has not merged away yet never shows. Everything else builds on
the ``v_*`` views only, never on the raw tables.

Parameterised views (``attribution``, ``attribution_paths``) take their parameters in the
call: ``SELECT * FROM leadflow.attribution(lookback_days = 90, half_life_days = 7)``.

Stage ranks: lead 1, mql 2, sql 3, opportunity 4, customer 5 (``recycled`` and
``disqualified`` are exits, rank 0). A lead "reached" a stage when it ever entered that
stage or a later one, so stage-to-stage rates never exceed 1 even when a lead skips a stage
(a demo request can turn a lead into an SQL directly).
"""

from __future__ import annotations

from leadflow.processors.events import TOUCH_KINDS

TOUCH_KIND_LIST = ", ".join(f"'{k.value}'" for k in sorted(TOUCH_KINDS))
STAGE_RANK = (
    "multiIf({s} = 'lead', 1, {s} = 'mql', 2, {s} = 'sql', 3, {s} = 'opportunity', 4, "
    "{s} = 'customer', 5, 0)"
)


def stage_rank(expr: str) -> str:
    """SQL for the funnel rank of the stage in ``expr``.

    Example:
        >>> stage_rank("to_stage").startswith("multiIf(to_stage = 'lead', 1")
        True
    """
    return STAGE_RANK.format(s=expr)


V_EVENTS = """
CREATE VIEW IF NOT EXISTS $db.v_events$oc AS
SELECT *, occurred_time FROM $db.events FINAL
"""

V_IDENTITIES = """
CREATE VIEW IF NOT EXISTS $db.v_identities$oc AS
SELECT
    workspace_id,
    anonymous_id,
    argMin(identities.lead_id, (identities.linked_at, identities.lead_id)) AS lead_id,
    min(linked_at) AS first_linked_at,
    uniqExact(identities.lead_id) AS leads_seen
FROM $db.identities
GROUP BY workspace_id, anonymous_id
"""

# Migration 3: a device whose latest consent_changed (by event time) withdrew tracking
# consent is linked to no lead, so its anonymous touches stay anonymous in every report
# (docs/privacy.md). The identity processor already refuses to stitch such a device; this
# covers the links the projector takes from raw events that carry both ids.
V_IDENTITIES_CONSENT = """
CREATE OR REPLACE VIEW $db.v_identities$oc AS
SELECT
    workspace_id,
    anonymous_id,
    argMin(identities.lead_id, (identities.linked_at, identities.lead_id)) AS lead_id,
    min(linked_at) AS first_linked_at,
    uniqExact(identities.lead_id) AS leads_seen
FROM $db.identities
WHERE (workspace_id, anonymous_id) NOT IN (
    SELECT workspace_id, anonymous_id
    FROM $db.events
    WHERE kind = 'consent_changed' AND anonymous_id != ''
    GROUP BY workspace_id, anonymous_id
    HAVING argMax(JSONExtractBool(payload_json, 'tracking'), (occurred_at, event_id)) = 0
)
GROUP BY workspace_id, anonymous_id
"""

# Every event with the person it belongs to: its own lead_id, else the lead its device was
# linked to (so touches before identification count for the lead), else the device.
V_PERSON_EVENTS = """
CREATE VIEW IF NOT EXISTS $db.v_person_events$oc AS
SELECT
    e.event_id AS event_id,
    e.workspace_id AS workspace_id,
    e.kind AS kind,
    e.occurred_at AS occurred_at,
    fromUnixTimestamp64Milli(e.occurred_at, 'UTC') AS occurred_time,
    e.anonymous_id AS anonymous_id,
    if(e.lead_id != '', e.lead_id, i.lead_id) AS lead_id,
    if(e.lead_id != '', e.lead_id, if(i.lead_id != '', i.lead_id, concat('anon:', e.anonymous_id)))
        AS person_id,
    e.channel AS channel,
    e.campaign AS campaign,
    e.experiment AS experiment,
    e.variant AS variant,
    e.company_size AS company_size,
    e.industry AS industry,
    e.country AS country,
    e.kind IN ($touch_kinds) AS is_touch
FROM $db.events AS e FINAL
LEFT JOIN $db.v_identities AS i
    ON i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id
"""

V_TOUCHES = """
CREATE VIEW IF NOT EXISTS $db.v_touches$oc AS
SELECT * FROM $db.v_person_events WHERE is_touch
"""

V_STAGE_TRANSITIONS = """
CREATE VIEW IF NOT EXISTS $db.v_stage_transitions$oc AS
SELECT *, occurred_time, $rank_to AS to_rank FROM $db.stage_transitions FINAL
"""

V_SCORES = """
CREATE VIEW IF NOT EXISTS $db.v_scores$oc AS
SELECT *, occurred_time FROM $db.scores FINAL
"""

V_DEALS = """
CREATE VIEW IF NOT EXISTS $db.v_deals$oc AS
SELECT *, occurred_time FROM $db.deals FINAL
"""

V_HANDOFFS = """
CREATE VIEW IF NOT EXISTS $db.v_handoffs$oc AS
SELECT *, became_sql_time FROM $db.handoffs FINAL
"""

V_SLA_BREACHES = """
CREATE VIEW IF NOT EXISTS $db.v_sla_breaches$oc AS
SELECT *, mql_time, due_time FROM $db.sla_breaches FINAL
"""

# A cost sender may restate a day (ad platforms re-sync): the latest event per day, channel
# and campaign wins; ties on time go to the larger event id so a replay picks the same row.
V_COSTS = """
CREATE VIEW IF NOT EXISTS $db.v_costs$oc AS
SELECT
    workspace_id, date, channel, campaign,
    argMax(costs.amount, (costs.occurred_at, costs.event_id)) AS amount,
    argMax(costs.currency, (costs.occurred_at, costs.event_id)) AS currency
FROM $db.costs
GROUP BY workspace_id, date, channel, campaign
"""

MV_LEAD_STATE_STAGE = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_lead_state_stage$oc TO $db.lead_state AS
SELECT
    workspace_id,
    lead_id,
    argMaxState(toString(to_stage), (occurred_at, sequence)) AS stage,
    max(occurred_at) AS stage_since,
    uniqExactState(transition_id) AS transitions
FROM $db.stage_transitions
GROUP BY workspace_id, lead_id
"""

MV_LEAD_STATE_SCORE = """
CREATE MATERIALIZED VIEW IF NOT EXISTS $db.mv_lead_state_score$oc TO $db.lead_state AS
SELECT
    workspace_id,
    lead_id,
    argMaxState(fit_score, (occurred_at, score_id)) AS fit_score,
    argMaxState(engagement_score, (occurred_at, score_id)) AS engagement_score,
    argMaxStateIf(assumeNotNull(model_score), (occurred_at, score_id), model_score IS NOT NULL)
        AS model_score,
    max(occurred_at) AS scored_at
FROM $db.scores
GROUP BY workspace_id, lead_id
"""

V_LEAD_STATE = """
CREATE VIEW IF NOT EXISTS $db.v_lead_state$oc AS
SELECT
    workspace_id,
    lead_id,
    argMaxMerge(stage) AS stage,
    max(stage_since) AS stage_since,
    uniqExactMerge(transitions) AS transitions,
    argMaxMerge(fit_score) AS fit_score,
    argMaxMerge(engagement_score) AS engagement_score,
    argMaxMerge(model_score) AS model_score,
    max(scored_at) AS scored_at
FROM $db.lead_state
GROUP BY workspace_id, lead_id
"""

# One row per lead: where it came from (first touch), who it is (latest known firmographics)
# and when it was created (first transition into 'lead', else its first transition).
V_LEAD_PROFILE = """
CREATE VIEW IF NOT EXISTS $db.v_lead_profile$oc AS
SELECT
    l.workspace_id AS workspace_id,
    l.lead_id AS lead_id,
    l.created_at AS created_at,
    toStartOfMonth(fromUnixTimestamp64Milli(l.created_at, 'UTC')) AS cohort_month,
    if(p.p_source = '', 'unknown', p.p_source) AS source,
    p.p_campaign AS source_campaign,
    if(p.p_industry = '', 'unknown', p.p_industry) AS industry,
    p.p_company_size AS company_size,
    multiIf(p.p_company_size IS NULL, 'unknown', p.p_company_size < 50, '1-49',
            p.p_company_size < 250, '50-249', p.p_company_size < 1000, '250-999', '1000+')
        AS size_band,
    if(p.p_country = '', 'unknown', p.p_country) AS country
FROM
(
    SELECT workspace_id, lead_id,
           if(countIf(to_stage = 'lead') > 0, minIf(occurred_at, to_stage = 'lead'),
              min(occurred_at)) AS created_at
    FROM $db.v_stage_transitions
    GROUP BY workspace_id, lead_id
) AS l
LEFT JOIN
(
    SELECT workspace_id, lead_id,
           argMinIf(channel, (occurred_at, event_id), is_touch) AS p_source,
           argMinIf(campaign, (occurred_at, event_id), is_touch) AS p_campaign,
           argMaxIf(industry, (occurred_at, event_id), industry != '') AS p_industry,
           argMaxIf(company_size, (occurred_at, event_id), company_size IS NOT NULL)
               AS p_company_size,
           argMaxIf(country, (occurred_at, event_id), country != '') AS p_country
    FROM $db.v_person_events
    WHERE lead_id != ''
    GROUP BY workspace_id, lead_id
) AS p
ON p.workspace_id = l.workspace_id AND p.lead_id = l.lead_id
"""

# Per lead: the furthest funnel stage it ever reached (a won deal counts as customer).
V_LEAD_FUNNEL = """
CREATE VIEW IF NOT EXISTS $db.v_lead_funnel$oc AS
SELECT
    p.workspace_id AS workspace_id, p.lead_id AS lead_id, p.created_at AS created_at,
    p.cohort_month AS cohort_month, p.source AS source, p.source_campaign AS source_campaign,
    p.industry AS industry, p.company_size AS company_size, p.size_band AS size_band,
    p.country AS country,
    greatest(t.max_rank, if(d.won_at > 0, 5, 0)) AS max_rank,
    t.mql_at AS mql_at,
    t.sql_at AS sql_at,
    t.opportunity_at AS opportunity_at,
    if(d.won_at > 0, d.won_at, t.customer_at) AS customer_at,
    d.revenue AS revenue,
    t.exit_stage AS exit_stage,
    t.exit_reason AS exit_reason
FROM $db.v_lead_profile AS p
LEFT JOIN
(
    SELECT workspace_id, lead_id,
           max(to_rank) AS max_rank,
           minIf(occurred_at, to_stage = 'mql') AS mql_at,
           minIf(occurred_at, to_stage = 'sql') AS sql_at,
           minIf(occurred_at, to_stage = 'opportunity') AS opportunity_at,
           minIf(occurred_at, to_stage = 'customer') AS customer_at,
           argMaxIf(toString(to_stage), (occurred_at, sequence),
                    to_stage IN ('disqualified', 'recycled')) AS exit_stage,
           argMaxIf(reason, (occurred_at, sequence),
                    to_stage IN ('disqualified', 'recycled')) AS exit_reason
    FROM $db.v_stage_transitions
    GROUP BY workspace_id, lead_id
) AS t ON t.workspace_id = p.workspace_id AND t.lead_id = p.lead_id
LEFT JOIN
(
    SELECT workspace_id, lead_id, minIf(occurred_at, outcome = 'won') AS won_at,
           sumIf(amount, outcome = 'won') AS revenue
    FROM $db.v_deals
    GROUP BY workspace_id, lead_id
) AS d ON d.workspace_id = p.workspace_id AND d.lead_id = p.lead_id
"""

# Time in stage: each transition opens a stay that the lead's next transition closes.
V_STAGE_DURATIONS = """
CREATE VIEW IF NOT EXISTS $db.v_stage_durations$oc AS
SELECT
    s.workspace_id AS workspace_id,
    s.lead_id AS lead_id,
    s.stage AS stage,
    s.entered_at AS entered_at,
    s.exited_at AS exited_at,
    s.next_stage AS next_stage,
    s.exited_at - s.entered_at AS duration_ms,
    (s.exited_at - s.entered_at) / 86400000 AS duration_days,
    p.source AS source,
    p.industry AS industry,
    p.size_band AS size_band,
    p.cohort_month AS cohort_month
FROM
(
    SELECT workspace_id, lead_id, toString(to_stage) AS stage, occurred_at AS entered_at,
           leadInFrame(toNullable(occurred_at)) OVER w AS exited_at,
           leadInFrame(toNullable(toString(to_stage))) OVER w AS next_stage
    FROM $db.v_stage_transitions
    WINDOW w AS (PARTITION BY workspace_id, lead_id ORDER BY occurred_at, sequence
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) AS s
LEFT JOIN $db.v_lead_profile AS p ON p.workspace_id = s.workspace_id AND p.lead_id = s.lead_id
"""

# Conversions attribution can credit. A lead may reach a stage more than once (recycling):
# each transition is its own conversion.
V_CONVERSIONS = """
CREATE VIEW IF NOT EXISTS $db.v_conversions$oc AS
SELECT workspace_id, lead_id, toString(to_stage) AS conversion, transition_id AS conversion_id,
       occurred_at, toFloat64(0) AS revenue
FROM $db.v_stage_transitions
WHERE to_stage IN ('lead', 'mql', 'sql', 'opportunity', 'customer')
UNION ALL
SELECT workspace_id, lead_id, 'won' AS conversion, event_id AS conversion_id, occurred_at,
       amount AS revenue
FROM $db.v_deals
WHERE outcome = 'won'
"""

# Every touch before each conversion within the lookback, with its position and the
# milestone positions the position-based models need:
#   lead_pos: the last touch at or before the lead's creation (else the first touch),
#   opp_pos: the last touch at or before the latest opportunity creation before the
#            conversion (else the last touch),
#   nd_last_pos: the last touch whose channel is not 'direct' (else the last touch).
ATTRIBUTION_TOUCHPOINTS_SQL = """
SELECT *,
       maxIf(pos, lead_at > 0 AND touch_at <= lead_at) OVER c AS lead_pos_raw,
       maxIf(pos, opp_at > 0 AND touch_at <= opp_at) OVER c AS opp_pos_raw,
       maxIf(pos, channel != 'direct') OVER c AS nd_pos_raw,
       if(lead_pos_raw > 0, lead_pos_raw, 1) AS lead_pos,
       if(opp_pos_raw > 0, opp_pos_raw, n) AS opp_pos,
       if(nd_pos_raw > 0, nd_pos_raw, n) AS nd_last_pos
FROM
(
    SELECT
        c.workspace_id AS workspace_id,
        c.conversion AS conversion,
        c.conversion_id AS conversion_id,
        c.lead_id AS lead_id,
        c.occurred_at AS converted_at,
        c.revenue AS revenue,
        t.event_id AS touch_id,
        t.occurred_at AS touch_at,
        t.channel AS channel,
        t.campaign AS campaign,
        (c.occurred_at - t.occurred_at) / 86400000 AS age_days,
        m.lead_at AS lead_at,
        arrayMax(arrayFilter(x -> x <= c.occurred_at, arrayPushFront(m.opp_times, 0)))
            AS opp_at,
        row_number() OVER (PARTITION BY c.workspace_id, c.conversion, c.conversion_id
                           ORDER BY t.occurred_at, t.event_id) AS pos,
        count() OVER (PARTITION BY c.workspace_id, c.conversion, c.conversion_id) AS n
    FROM $db.v_conversions AS c
    INNER JOIN $db.v_touches AS t
        ON t.workspace_id = c.workspace_id AND t.lead_id = c.lead_id
    LEFT JOIN
    (
        SELECT workspace_id, lead_id, minIf(occurred_at, to_stage = 'lead') AS lead_at,
               groupArrayIf(occurred_at, to_stage = 'opportunity') AS opp_times
        FROM $db.v_stage_transitions
        GROUP BY workspace_id, lead_id
    ) AS m ON m.workspace_id = c.workspace_id AND m.lead_id = c.lead_id
    WHERE t.occurred_at <= c.occurred_at
      AND t.occurred_at >= c.occurred_at - toInt64({lookback_days:UInt32}) * 86400000
)
WINDOW c AS (PARTITION BY workspace_id, conversion, conversion_id)
"""

# Position-based shares: the milestone touches get their shares (added up when two
# milestones are the same touch); the rest share is spread evenly over the other touches,
# and when there are none the milestones' shares are rescaled to sum to 1.
ATTRIBUTION = """
CREATE VIEW IF NOT EXISTS $db.attribution$oc AS
SELECT
    workspace_id, conversion, conversion_id, lead_id, converted_at, revenue,
    touch_id, touch_at, channel, campaign, pos, n,
    model, weight, weight * revenue AS revenue_credit
FROM
(
    SELECT *,
        length(arrayDistinct([1, n])) AS u_ms,
        length(arrayDistinct([1, lead_pos, opp_pos])) AS w_ms,
        length(arrayDistinct([1, lead_pos, opp_pos, n])) AS f_ms,
        0.4 * (pos = 1) + 0.4 * (pos = n) AS u_share,
        0.3 * (pos = 1) + 0.3 * (pos = lead_pos) + 0.3 * (pos = opp_pos) AS w_share,
        0.225 * ((pos = 1) + (pos = lead_pos) + (pos = opp_pos) + (pos = n)) AS f_share,
        pow(2, -age_days / {half_life_days:Float64}) AS decay,
        sum(decay) OVER (PARTITION BY workspace_id, conversion, conversion_id) AS decay_total
    FROM ($touchpoints)
)
ARRAY JOIN
    ['first_touch', 'last_touch', 'linear', 'time_decay', 'u_shaped', 'w_shaped', 'full_path']
        AS model,
    [
        toFloat64(pos = 1),
        toFloat64(pos = nd_last_pos),
        1 / n,
        decay / decay_total,
        if(n > u_ms, u_share + if(u_share > 0, 0, 0.2 / (n - u_ms)), u_share / 0.8),
        if(n > w_ms, w_share + if(w_share > 0, 0, 0.1 / (n - w_ms)), w_share / 0.9),
        if(n > f_ms, f_share + if(f_share > 0, 0, 0.1 / (n - f_ms)), f_share / 0.9)
    ] AS weight
"""

# Journeys for the Markov model: the channel path before each conversion (within the
# lookback), and for every person who never reached that conversion, the path of their
# touches within the lookback before their last touch.
ATTRIBUTION_PATHS = """
CREATE VIEW IF NOT EXISTS $db.attribution_paths$oc AS
SELECT workspace_id, conversion, path, toUInt64(sum(converted)) AS conversions,
       toUInt64(sum(1 - converted)) AS non_conversions, sum(revenue) AS revenue
FROM
(
    SELECT workspace_id, conversion, conversion_id,
           arrayMap(x -> x.2, arraySort(groupArray((pos, channel)))) AS path,
           1 AS converted, any(revenue) AS revenue
    FROM ($touchpoints)
    GROUP BY workspace_id, conversion, conversion_id
    UNION ALL
    SELECT t.workspace_id AS workspace_id, k.conversion AS conversion,
           t.person_id AS conversion_id,
           arrayMap(x -> x.3, arraySort(groupArrayIf((t.occurred_at, t.event_id, t.channel),
               t.occurred_at >= l.last_at - toInt64({lookback_days:UInt32}) * 86400000)))
               AS path,
           0 AS converted, toFloat64(0) AS revenue
    FROM $db.v_touches AS t
    CROSS JOIN (SELECT arrayJoin(['lead', 'mql', 'sql', 'opportunity', 'customer', 'won'])
                AS conversion) AS k
    INNER JOIN (SELECT workspace_id, person_id, max(occurred_at) AS last_at
                FROM $db.v_touches GROUP BY workspace_id, person_id) AS l
        ON l.workspace_id = t.workspace_id AND l.person_id = t.person_id
    WHERE (t.workspace_id, t.lead_id, k.conversion) NOT IN
        (SELECT workspace_id, lead_id, conversion FROM $db.v_conversions)
    GROUP BY t.workspace_id, k.conversion, t.person_id
)
GROUP BY workspace_id, conversion, path
"""


# -- migration 5 (issue 14): identity merges ---------------------------------------------
# A merged lead id resolves to its survivor: the latest merge of the id names it (a chain
# A -> B -> C has a row A -> C, written when B merged, see LeadMerged.merged_lead_ids).
# ``adopted_history`` is 1 only if every merge on the way continued the merged id's stage
# history (min over its rows); otherwise its derived rows are superseded by the survivor's.
V_LEAD_MERGES = """
CREATE VIEW IF NOT EXISTS $db.v_lead_merges$oc AS
SELECT
    workspace_id,
    merged_lead_id,
    argMax(lead_merges.lead_id, (lead_merges.merged_at, lead_merges.merge_id)) AS lead_id,
    min(lead_merges.adopted_history) AS adopted_history,
    min(merged_at) AS first_merged_at
FROM $db.lead_merges
GROUP BY workspace_id, merged_lead_id
"""

# Every event with its person, as before, then resolved through merges: a touch of the
# form-then-identify person counts once, for the survivor.
V_PERSON_EVENTS_MERGED = """
CREATE OR REPLACE VIEW $db.v_person_events$oc AS
SELECT
    p.event_id AS event_id, p.workspace_id AS workspace_id, p.kind AS kind,
    p.occurred_at AS occurred_at, p.occurred_time AS occurred_time,
    p.anonymous_id AS anonymous_id,
    if(m.lead_id != '', m.lead_id, p.raw_lead_id) AS lead_id,
    if(m.lead_id != '', m.lead_id, p.raw_person_id) AS person_id,
    p.channel AS channel, p.campaign AS campaign, p.experiment AS experiment,
    p.variant AS variant, p.company_size AS company_size, p.industry AS industry,
    p.country AS country, p.is_touch AS is_touch
FROM
(
    SELECT
        e.event_id AS event_id,
        e.workspace_id AS workspace_id,
        e.kind AS kind,
        e.occurred_at AS occurred_at,
        fromUnixTimestamp64Milli(e.occurred_at, 'UTC') AS occurred_time,
        e.anonymous_id AS anonymous_id,
        if(e.lead_id != '', e.lead_id, i.lead_id) AS raw_lead_id,
        if(raw_lead_id != '', raw_lead_id, concat('anon:', e.anonymous_id)) AS raw_person_id,
        e.channel AS channel,
        e.campaign AS campaign,
        e.experiment AS experiment,
        e.variant AS variant,
        e.company_size AS company_size,
        e.industry AS industry,
        e.country AS country,
        e.kind IN ($touch_kinds) AS is_touch
    FROM $db.events AS e FINAL
    LEFT JOIN $db.v_identities AS i
        ON i.workspace_id = e.workspace_id AND i.anonymous_id = e.anonymous_id
) AS p
LEFT JOIN $db.v_lead_merges AS m
    ON m.workspace_id = p.workspace_id AND m.merged_lead_id = p.raw_lead_id
"""


# A ``v_*`` view over one table with lead ids resolved through merges. Rows of a merged id
# count for its survivor when the survivor continued its history (``adopted_history``);
# otherwise the survivor's own rows stand and the merged id's are left out, so no person
# has two histories. ``$extra`` adds the table's computed columns.
_RESOLVED = """
CREATE OR REPLACE VIEW $db.$view$oc AS
SELECT r.* REPLACE (if(m.lead_id != '', m.lead_id, r.lead_id) AS lead_id)$extra
FROM $db.$table AS r FINAL
LEFT JOIN $db.v_lead_merges AS m
    ON m.workspace_id = r.workspace_id AND m.merged_lead_id = r.lead_id
WHERE m.merged_lead_id = '' OR m.adopted_history = 1
"""


def _resolved(view: str, table: str, extra: str) -> str:
    return _RESOLVED.replace("$view", view).replace("$table", table).replace("$extra", extra)


# Deals are facts (money), not history: every deal counts, for the survivor.
V_DEALS_MERGED = """
CREATE OR REPLACE VIEW $db.v_deals$oc AS
SELECT d.* REPLACE (if(m.lead_id != '', m.lead_id, d.lead_id) AS lead_id), d.occurred_time
FROM $db.deals AS d FINAL
LEFT JOIN $db.v_lead_merges AS m
    ON m.workspace_id = d.workspace_id AND m.merged_lead_id = d.lead_id
"""

# The current state per live lead: a merged id is no lead any more.
V_LEAD_STATE_MERGED = """
CREATE OR REPLACE VIEW $db.v_lead_state$oc AS
SELECT
    workspace_id,
    lead_id,
    argMaxMerge(stage) AS stage,
    max(stage_since) AS stage_since,
    uniqExactMerge(transitions) AS transitions,
    argMaxMerge(fit_score) AS fit_score,
    argMaxMerge(engagement_score) AS engagement_score,
    argMaxMerge(model_score) AS model_score,
    max(scored_at) AS scored_at
FROM $db.lead_state
WHERE (workspace_id, lead_id) NOT IN (SELECT workspace_id, merged_lead_id FROM $db.lead_merges)
GROUP BY workspace_id, lead_id
"""


def merge_view_statements() -> tuple[str, ...]:
    """Migration 5's views: merges, then the base views resolving lead ids through them.

    Dependencies first; ``$db``/``$oc`` unbound.

    Example:
        >>> any("v_lead_merges" in s for s in merge_view_statements())
        True
    """
    return tuple(
        s.replace("$touch_kinds", TOUCH_KIND_LIST).replace("$rank_to", stage_rank("r.to_stage"))
        for s in (
            V_LEAD_MERGES,
            V_PERSON_EVENTS_MERGED,
            _resolved("v_stage_transitions", "stage_transitions",
                      ", r.occurred_time AS occurred_time, $rank_to AS to_rank"),
            _resolved("v_scores", "scores", ", r.occurred_time AS occurred_time"),
            _resolved("v_handoffs", "handoffs", ", r.became_sql_time AS became_sql_time"),
            _resolved("v_sla_breaches", "sla_breaches",
                      ", r.mql_time AS mql_time, r.due_time AS due_time"),
            V_DEALS_MERGED,
            V_LEAD_STATE_MERGED,
        )
    )  # fmt: skip


def view_statements() -> tuple[str, ...]:
    """Every view template in creation order (dependencies first); ``$db``/``$oc`` unbound.

    Example:
        >>> any("v_lead_state" in s for s in view_statements())
        True
    """
    return tuple(
        s.replace("$touch_kinds", TOUCH_KIND_LIST)
        .replace("$rank_to", stage_rank("to_stage"))
        .replace("$touchpoints", ATTRIBUTION_TOUCHPOINTS_SQL)
        for s in (
            V_EVENTS, V_IDENTITIES, V_PERSON_EVENTS, V_TOUCHES, V_STAGE_TRANSITIONS, V_SCORES,
            V_DEALS, V_HANDOFFS, V_SLA_BREACHES, V_COSTS, MV_LEAD_STATE_STAGE,
            MV_LEAD_STATE_SCORE, V_LEAD_STATE, V_LEAD_PROFILE, V_LEAD_FUNNEL, V_STAGE_DURATIONS,
            V_CONVERSIONS, ATTRIBUTION, ATTRIBUTION_PATHS,
        )
    )  # fmt: skip


# Migration 6: the scoring model's health per workspace and model kind, on the same label
# the trainer learns (processors/labels.py): did the lead reach the conversion stage
# (``conversion_rank``: 3 = sql, 5 = customer) within ``horizon_days`` after the score?
# An example is every model score of an open lead (lead, mql, recycled) made in the sliding
# event-time window of ``window_days`` that ends ``horizon_days`` before the workspace's
# newest score, so every label in it is known (no censored negatives). A score made by the
# converting event itself (a demo request) is left out: it would grade itself. AUC is
# ClickHouse's arrayAUC (ties count one half), ECE is over 10 equal-width bins, and the
# warnings mirror processors/model.py's Health: ``one_class`` (20+ examples, one class),
# ``few_labels`` (fewer than ``min_labels`` of a class in the window). Where it differs
# from the trainer: docs/analytics.md "Model health".
#   SELECT * FROM leadflow.model_health(window_days = 90, horizon_days = 30,
#                                       min_labels = 30, conversion_rank = 3)
MODEL_HEALTH = """
CREATE VIEW IF NOT EXISTS $db.model_health$oc AS
SELECT
    workspace_id,
    model,
    argMinMerge(first_version) AS first_version,
    argMaxMerge(last_version) AS last_version,
    toDateTime64(any(window_from) / 1000, 3, 'UTC') AS window_from,
    toDateTime64(any(window_to) / 1000, 3, 'UTC') AS window_to,
    toUInt64(sum(n)) AS examples,
    toUInt64(sum(pos)) AS positives,
    toUInt64(sum(n) - sum(pos)) AS negatives,
    if(examples > 0, round(positives / examples, 4), NULL) AS positive_rate,
    if(positives > 0 AND negatives > 0,
       round(arrayAUC(arrayFlatten(groupArray(ps)), arrayFlatten(groupArray(ys))), 4),
       NULL) AS auc,
    if(examples > 0, round(sum(abs(sp - pos)) / examples, 4), NULL) AS ece,
    arrayFilter(w -> w != '', [
        if(examples >= 20 AND (positives = 0 OR negatives = 0), 'one_class', ''),
        if(least(positives, negatives) < {min_labels:UInt32}, 'few_labels', '')
    ]) AS warnings
FROM
(
    SELECT
        workspace_id, model,
        any(window_from) AS window_from, any(window_to) AS window_to,
        argMinStateIf(model_version, scored_at, in_window) AS first_version,
        argMaxStateIf(model_version, scored_at, in_window) AS last_version,
        countIf(in_window) AS n,
        countIf(in_window AND y) AS pos,
        sumIf(p, in_window) AS sp,
        groupArrayIf(p, in_window) AS ps,
        groupArrayIf(toUInt8(y), in_window) AS ys
    FROM
    (
        SELECT
            s.workspace_id AS workspace_id,
            splitByChar('@', s.model_version)[1] AS model,
            s.model_version AS model_version,
            s.occurred_at AS scored_at,
            s.model_score AS p,
            s.now_ms - toInt64({horizon_days:UInt32} + {window_days:UInt32}) * 86400000
                AS window_from,
            s.now_ms - toInt64({horizon_days:UInt32}) * 86400000 AS window_to,
            c.hit = 1 AND c.converted_at < s.occurred_at + toInt64({horizon_days:UInt32}) * 86400000
                AS y,
            s.occurred_at >= window_from AND s.occurred_at < window_to
                AND NOT (c.hit = 1 AND c.converted_at = s.occurred_at) AS in_window,
            least(9, toUInt8(floor(s.model_score * 10))) AS bin
        FROM
        (
            SELECT * FROM
            (
                SELECT workspace_id, lead_id, occurred_at, model_score, model_version, stage,
                       max(occurred_at) OVER (PARTITION BY workspace_id) AS now_ms
                FROM $db.v_scores
            )
            WHERE model_score IS NOT NULL
              AND (stage = 'recycled' OR $rank_stage BETWEEN 1 AND {conversion_rank:UInt8} - 1)
        ) AS s
        ASOF LEFT JOIN
        (
            SELECT workspace_id, lead_id, occurred_at AS converted_at, toUInt8(1) AS hit
            FROM $db.v_stage_transitions
            WHERE to_rank >= {conversion_rank:UInt8}
        ) AS c
        ON s.workspace_id = c.workspace_id AND s.lead_id = c.lead_id
           AND c.converted_at >= s.occurred_at
    )
    GROUP BY workspace_id, model, if(in_window, bin, 255)
)
GROUP BY workspace_id, model
"""


def model_health_statements() -> tuple[str, ...]:
    """Migration 6's statements (``$db``/``$oc`` unbound).

    Example:
        >>> "arrayAUC" in model_health_statements()[0]
        True
    """
    return (MODEL_HEALTH.replace("$rank_stage", stage_rank("stage")),)


# Migration 7 (issue 15): refused inputs. The projector writes one ``dead_letters`` row per
# record of the dead-letter topic (headers only: who refused it, why, which fields).
V_DEAD_LETTERS = """
CREATE VIEW IF NOT EXISTS $db.v_dead_letters$oc AS
SELECT *, received_time FROM $db.dead_letters FINAL
"""

# Refusals per workspace, day (received time), who refused, reason and field name ('' when
# the refusal names none): "which field of which sender is refused, since when".
V_REFUSALS = """
CREATE VIEW IF NOT EXISTS $db.v_refusals$oc AS
SELECT
    workspace_id,
    toDate(received_time) AS day,
    stage,
    reason,
    arrayJoin(if(empty(fields), [''], fields)) AS field,
    count() AS refused
FROM $db.v_dead_letters
GROUP BY workspace_id, day, stage, reason, field
"""

# The share of a workspace's inbound messages the model never learnt from, over the
# ``refused_days`` of RECEIVE time ending at the workspace's newest receive (a stored event
# or a refusal): refused = refused by the collector (never stored) + refused by the worker
# (stored but never processed); share = refused / (stored events + collector refusals).
# Projector refusals are left out: the worker processed those records.
REFUSED_SHARE_WARN = 0.5  # "mostly refused": documented in docs/analytics.md "Model health"
_REFUSALS_BODY = """
    SELECT
        workspace_id,
        toUInt64(uniqExactIf(id, src = 'event')) AS stored,
        toUInt64(uniqExactIf(id, src = 'collector')) AS refused_by_collector,
        toUInt64(uniqExactIf(id, src = 'worker')) AS refused_by_worker,
        refused_by_collector + refused_by_worker AS refused,
        if(stored + refused_by_collector > 0,
           round(least(1, refused / (stored + refused_by_collector)), 4), NULL) AS refused_share
    FROM
    (
        SELECT workspace_id, src, id, t FROM
        (
            SELECT workspace_id, 'event' AS src, event_id AS id, received_at AS t
            FROM $db.events
            UNION ALL
            SELECT workspace_id, toString(stage) AS src, dlq_id AS id, received_at AS t
            FROM $db.dead_letters
            WHERE stage IN ('collector', 'worker')
        ) AS x
        INNER JOIN
        (
            SELECT workspace_id, max(t) AS now_ms FROM
            (
                SELECT workspace_id, max(received_at) AS t FROM $db.events GROUP BY workspace_id
                UNION ALL
                SELECT workspace_id, max(received_at) AS t FROM $db.dead_letters
                WHERE stage IN ('collector', 'worker') GROUP BY workspace_id
            )
            GROUP BY workspace_id
        ) AS n ON x.workspace_id = n.workspace_id
        WHERE x.t > n.now_ms - toInt64({refused_days:UInt32}) * 86400000
    )
    GROUP BY workspace_id
"""
REFUSED_INPUTS = """
CREATE VIEW IF NOT EXISTS $db.refused_inputs$oc AS
$refusals
"""

# model_health again, with each workspace's refused inputs (``refused_days``) beside the
# model figures and the warning ``inputs_refused`` when the share exceeds
# REFUSED_SHARE_WARN. A workspace with refusals but no model score yet has a row too (model
# ''), so "everything is refused" is not silent because nothing got far enough to be scored.
#   SELECT * FROM leadflow.model_health(window_days = 90, horizon_days = 30, min_labels = 30,
#                                       conversion_rank = 3, refused_days = 7)
MODEL_HEALTH_REFUSED = """
CREATE OR REPLACE VIEW $db.model_health$oc AS
SELECT
    if(m.workspace_id != '', m.workspace_id, r.workspace_id) AS workspace_id,
    m.model AS model,
    m.first_version AS first_version,
    m.last_version AS last_version,
    if(m.workspace_id != '', m.window_from, NULL) AS window_from,
    if(m.workspace_id != '', m.window_to, NULL) AS window_to,
    m.examples AS examples,
    m.positives AS positives,
    m.negatives AS negatives,
    m.positive_rate AS positive_rate,
    m.auc AS auc,
    m.ece AS ece,
    r.stored AS inputs_stored,
    r.refused AS inputs_refused,
    r.refused_share AS refused_share,
    arrayConcat(m.warnings,
                if(r.refused_share > $refused_share_warn, ['inputs_refused'], [])) AS warnings
FROM
(
$model
) AS m
FULL OUTER JOIN
(
$refusals
) AS r ON m.workspace_id = r.workspace_id
"""


def refusal_statements() -> tuple[str, ...]:
    """Migration 7's statements (``$db``/``$oc`` unbound): dead letters, refusals, health.

    Example:
        >>> [s.split(" AS", 1)[0].split(".")[-1] for s in refusal_statements()]
        ['v_dead_letters$oc', 'v_refusals$oc', 'refused_inputs$oc', 'model_health$oc']
    """
    model = MODEL_HEALTH.split(" AS\n", 1)[1].replace("$rank_stage", stage_rank("stage"))
    return tuple(
        s.replace("$model", model.strip())
        .replace("$refusals", _REFUSALS_BODY.strip("\n"))
        .replace("$refused_share_warn", str(REFUSED_SHARE_WARN))
        for s in (V_DEAD_LETTERS, V_REFUSALS, REFUSED_INPUTS, MODEL_HEALTH_REFUSED)
    )


# Migration 8: deals.amount is Nullable (a deal without an amount is NULL, not 0). A view
# keeps the column types it was created with, and one whose query now returns a Nullable
# column in their place fails (Code 80), so the views that expose the amount are made
# again: v_deals with the Nullable amount (sum/avg over lost deals skip the unknown ones),
# v_lead_funnel and v_conversions with the won revenue as before, Float64 (a won deal
# always has an amount; sumIf over a Nullable column is NULL where nothing matches, so a
# lead with a lost deal and none won keeps its 0). The views on these two are unchanged.


def _replaced(statement: str, old: str, new: str) -> str:
    """``statement`` as ``CREATE OR REPLACE VIEW``, with its one ``old`` made ``new``.

    Example:
        >>> print(_replaced(V_DEALS, "SELECT *,", "SELECT event_id,").strip())
        CREATE OR REPLACE VIEW $db.v_deals$oc AS
        SELECT event_id, occurred_time FROM $db.deals FINAL
    """
    if statement.count(old) != 1:
        raise ValueError(f"{old!r} is not in the statement once")
    created = statement.replace("CREATE VIEW IF NOT EXISTS", "CREATE OR REPLACE VIEW", 1)
    return created.replace(old, new)


def nullable_amount_statements() -> tuple[str, ...]:
    """Migration 8's views (``$db``/``$oc`` unbound), after its ``ALTER TABLE``.

    Example:
        >>> [s.split()[4] for s in nullable_amount_statements()]
        ['$db.v_deals$oc', '$db.v_lead_funnel$oc', '$db.v_conversions$oc']
    """
    won = "sumIf(amount, outcome = 'won')"
    return (
        V_DEALS_MERGED,
        _replaced(V_LEAD_FUNNEL, f"{won} AS revenue", f"ifNull({won}, 0) AS revenue"),
        _replaced(V_CONVERSIONS, "amount AS revenue", "ifNull(amount, 0) AS revenue"),
    )
