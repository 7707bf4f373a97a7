"""Grafana dashboards for the compose stack, generated here so their SQL lives in ``sinks/``.

``python -m leadflow.sinks.dashboards > infra/grafana/dashboards/leadflow.json`` writes the
provisioned dashboard; a test runs every panel's query on the embedded engine and fails when
the committed JSON is stale. Panels read only the deduplicating ``v_*`` views, scoped to the
dashboard's ``workspace`` variable (chosen from the workspaces that exist).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "leadflow-clickhouse"}
WORKSPACES = "SELECT DISTINCT workspace_id FROM leadflow.v_lead_funnel ORDER BY workspace_id"


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: a title, a Grafana panel type and its query."""

    title: str
    kind: str  # Grafana panel type: barchart, timeseries, table, stat
    sql: str
    description: str = ""


PANELS: tuple[Panel, ...] = (
    Panel(
        "Funnel: leads that reached each stage",
        "barchart",
        """SELECT stage, reached FROM (
    SELECT ['lead', 'mql', 'sql', 'opportunity', 'customer'] AS stages,
           [countIf(max_rank >= 1), countIf(max_rank >= 2), countIf(max_rank >= 3),
            countIf(max_rank >= 4), countIf(max_rank >= 5)] AS counts
    FROM leadflow.v_lead_funnel WHERE workspace_id = '${workspace}'
) ARRAY JOIN stages AS stage, counts AS reached""",
        "Leads by the furthest stage they reached (a won deal counts as customer).",
    ),
    Panel(
        "New leads per week by source",
        "timeseries",
        """SELECT toStartOfWeek(fromUnixTimestamp64Milli(created_at, 'UTC')) AS time,
       source, count() AS leads
FROM leadflow.v_lead_funnel WHERE workspace_id = '${workspace}'
GROUP BY time, source ORDER BY time""",
    ),
    Panel(
        "Hand-offs to sales per week",
        "timeseries",
        """SELECT toStartOfWeek(became_sql_time) AS time, count() AS sqls
FROM leadflow.v_handoffs WHERE workspace_id = '${workspace}'
GROUP BY time ORDER BY time""",
    ),
    Panel(
        "Won revenue and leads by first-touch source",
        "table",
        """SELECT source, count() AS leads, countIf(max_rank >= 3) AS sqls,
       countIf(max_rank >= 5) AS customers, sum(revenue) AS revenue
FROM leadflow.v_lead_funnel WHERE workspace_id = '${workspace}'
GROUP BY source ORDER BY revenue DESC""",
    ),
    Panel(
        "Days in stage (median and p90)",
        "table",
        """SELECT stage, count() AS stays,
       round(quantile(0.5)(duration_days), 1) AS p50_days,
       round(quantile(0.9)(duration_days), 1) AS p90_days
FROM leadflow.v_stage_durations
WHERE workspace_id = '${workspace}' AND exited_at IS NOT NULL
GROUP BY stage ORDER BY p50_days DESC""",
    ),
    Panel(
        "MQL review SLA breaches per week",
        "timeseries",
        """SELECT toStartOfWeek(due_time) AS time, count() AS breaches
FROM leadflow.v_sla_breaches WHERE workspace_id = '${workspace}'
GROUP BY time ORDER BY time""",
    ),
)


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "rawSql": panel.sql,
                "format": 0 if panel.kind == "timeseries" else 1,
                "queryType": "timeseries" if panel.kind == "timeseries" else "table",
            }
        ],
    }


def dashboard() -> dict[str, Any]:
    """The provisioned ``leadflow`` dashboard as Grafana JSON."""
    return {
        "uid": "leadflow-overview",
        "title": "leadflow: funnel, pipeline and velocity",
        "schemaVersion": 39,
        "time": {"from": "now-1y", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "workspace",
                    "label": "workspace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": WORKSPACES,
                    "refresh": 1,
                }
            ]
        },
        "panels": [_panel(i, p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    """The dashboard JSON text, as committed under ``infra/grafana/dashboards``."""
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
