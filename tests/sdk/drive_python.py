"""Drive a real Python tracker SDK, unmodified, against a collector (run in tests/sdk/.venv).

    python drive_python.py segment|rudder URL WRITE_KEY RUN_ID journey|full|oversize

Prints one JSON object: the errors the SDK reported through its on_error hook.
"""

import json
import sys
from datetime import UTC, datetime

sdk, url, key, run, scenario = sys.argv[1:6]
errors = []


def on_error(exc, batch):
    errors.append(
        {
            "type": type(exc).__name__,
            "status": getattr(exc, "status", None),
            "code": getattr(exc, "code", None),
            "messages": len(batch),
        }
    )


if sdk == "segment":
    from segment.analytics import Client
else:
    from rudderstack.analytics import Client

client = Client(key, host=url, on_error=on_error, max_retries=2)
anon, lead = f"anon-{run}", f"lead-{run}"
at = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)

if scenario == "journey":
    ctx = {"page": {"url": "https://acme.example/pricing?utm_source=google&utm_medium=cpc"}}
    client.page(
        anonymous_id=anon,
        name="Pricing",
        properties={"path": "/pricing"},
        context=ctx,
        timestamp=at,
        message_id=f"{run}-page",
    )
    client.track(
        anonymous_id=anon,
        event="Form Submitted",
        timestamp=at,
        properties={
            "form_id": "demo",
            "email": f"{run}@acme.example",
            "company_size": "51-200",
            "title": "CTO",
        },
        message_id=f"{run}-form",
    )
    client.identify(
        user_id=lead,
        anonymous_id=anon,
        timestamp=at,
        message_id=f"{run}-identify",
        traits={
            "email": f"{run}@acme.example",
            "firstName": "Ada",
            "company": {"name": "Acme", "employee_count": 120},
        },
    )
    client.alias(previous_id=anon, user_id=lead, timestamp=at, message_id=f"{run}-alias")
    client.group(
        user_id=lead,
        group_id="acme",
        traits={
            "name": "Acme",
            "employees": "51-200",
            "industry": "Software",
            "plan": "enterprise",
            "website": "acme.example",
            "address": {"country": "DE", "city": "Berlin"},
        },
        timestamp=at,
        message_id=f"{run}-group",
    )
    client.track(
        user_id=lead,
        event="Deal Won",
        properties={"revenue": "12000"},
        timestamp=at,
        message_id=f"{run}-won",
    )
elif scenario == "full":
    # A full batch at the SDK's own limits: segment-analytics-python sends 100 messages
    # under 475,000 bytes; rudder-sdk-python 100 messages of up to 4 MiB together (here
    # 30 KB each, 3 MB: six times Segment's 500 KB, under RudderStack's 4000 KB).
    size = 4_400 if sdk == "segment" else 30_000
    for i in range(100):
        client.track(
            anonymous_id=anon,
            event="Pricing Viewed",
            properties={"blob": "x" * size},
            message_id=f"{run}-full-{i}",
        )
elif scenario == "oversize":
    # Two 3 MB messages: rudder-sdk-python batches them together (its limit is 4 MiB per
    # batch, checked after adding), over RudderStack's 4000 KB gateway limit.
    for i in range(2):
        client.track(
            anonymous_id=anon,
            event="Big",
            properties={"blob": "x" * 3_000_000},
            message_id=f"{run}-big-{i}",
        )
client.flush()
client.join()
print(json.dumps({"errors": errors}))
