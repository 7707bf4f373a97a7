"""Labelled leads of one workspace from ClickHouse: the history ``policy suggest-weights`` fits.

One row per lead created at least ``horizon_days`` before the workspace's newest lead (so
it had time to convert): its firmographics as the fit rules read them (title from the
latest identify or form that named one, company size, industry and country from
``v_lead_funnel``) and whether it ever reached ``conversion_rank`` (3 = sql, 5 = customer).
Merged leads count once, under their survivor. The email is not in ClickHouse
(docs/privacy.md), so rules on the email domain cannot be fitted from here.
"""

from __future__ import annotations

from typing import Any

from leadflow.sinks.reports import query_settings
from leadflow.sinks.tables import check_identifier

LABELLED_LEADS_SQL = """
SELECT f.lead_id, t.title, f.company_size,
       if(f.industry = 'unknown', '', f.industry) AS industry,
       if(f.country = 'unknown', '', f.country) AS country,
       f.max_rank >= {conversion_rank:UInt8} AS converted
FROM $db.v_lead_funnel AS f
LEFT JOIN
(
    SELECT e.workspace_id AS workspace_id,
           if(m.lead_id != '', m.lead_id, e.lead_id) AS lead_id,
           argMax(JSONExtractString(e.payload_json, 'title'), e.occurred_at) AS title
    FROM $db.v_events AS e
    LEFT JOIN $db.v_lead_merges AS m
        ON m.workspace_id = e.workspace_id AND m.merged_lead_id = e.lead_id
    WHERE e.workspace_id = {workspace:String} AND e.lead_id != ''
      AND e.kind IN ('identify', 'form_submitted')
      AND JSONExtractString(e.payload_json, 'title') != ''
    GROUP BY workspace_id, lead_id
) AS t ON t.workspace_id = f.workspace_id AND t.lead_id = f.lead_id
WHERE f.workspace_id = {workspace:String}
  AND f.created_at <= (SELECT max(created_at) FROM $db.v_lead_funnel
                       WHERE workspace_id = {workspace:String})
                      - toInt64({horizon_days:UInt32}) * 86400000
ORDER BY f.lead_id
"""


def labelled_leads(
    client: Any, database: str, workspace: str, *, conversion_rank: int, horizon_days: int
) -> list[tuple[str, str, int | None, str, str, bool]]:
    """``(lead_id, title, company_size, industry, country, converted)`` of one workspace."""
    db = check_identifier(database, "database")
    result = client.query(
        LABELLED_LEADS_SQL.replace("$db", db),
        parameters={
            "workspace": workspace,
            "conversion_rank": conversion_rank,
            "horizon_days": horizon_days,
        },
        settings=query_settings(client),
    )
    return [
        (str(r[0]), str(r[1] or ""), r[2], str(r[3]), str(r[4]), bool(r[5]))
        for r in result.result_rows
    ]


__all__ = ["LABELLED_LEADS_SQL", "labelled_leads"]
