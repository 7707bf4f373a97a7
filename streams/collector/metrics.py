"""Prometheus metrics of one collector (own registry, so several apps can live in a test)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REJECT_REASONS = (
    "invalid",
    "unauthorized",
    "too_large",
    "rate_limited",
    "unavailable",
    "internal",
    "not_found",
    "forbidden",
    "timeout",
)
# Why a single event of an accepted request went to the dead-letter topic.
REFUSE_REASONS = ("invalid", "too_large", "forbidden")


class CollectorMetrics:
    """Accepted events, rejected requests and events by reason, produce latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "leadflow_collector_events_accepted",
            "Events acknowledged by Kafka and answered 2xx.",
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "leadflow_collector_requests_rejected",
            "Requests answered 4xx/5xx, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rejected_events = Counter(
            "leadflow_collector_events_rejected",
            "Events in rejected requests, by reason (a bad batch rejects all its events).",
            ["reason"],
            registry=self.registry,
        )
        self.refused_events = Counter(
            "leadflow_collector_events_refused",
            "Events not stored and written to the dead-letter topic, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.ignored_fields = Counter(
            "leadflow_collector_fields_ignored",
            "Fields of stored events that were dropped, not stored at all (the answer's "
            "'ignored').",
            registry=self.registry,
        )
        self.kept_fields = Counter(
            "leadflow_collector_fields_kept",
            "Fields of stored events that the kind has no field for, kept sealed in "
            "extra_json (the answer's 'kept').",
            registry=self.registry,
        )
        self.warnings = Counter(
            "leadflow_collector_values_adjusted",
            "Values stored differently from how they were sent (the answer's 'warnings').",
            registry=self.registry,
        )
        self.erasures = Counter(
            "leadflow_collector_erasures",
            "Erasures through the admin API (done) and their dry runs (preview).",
            ["outcome"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "leadflow_collector_produce_seconds",
            "From produce to the last acknowledgement of a request's events.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        for reason in REJECT_REASONS:  # export zeros, so dashboards see every series
            self.rejected_requests.labels(reason)
            self.rejected_events.labels(reason)
        for reason in REFUSE_REASONS:
            self.refused_events.labels(reason)
        for outcome in ("done", "preview"):
            self.erasures.labels(outcome)

    def reject(self, reason: str, events: int) -> None:
        """Count one rejected request carrying ``events`` events."""
        self.rejected_requests.labels(reason).inc()
        if events:
            self.rejected_events.labels(reason).inc(events)
