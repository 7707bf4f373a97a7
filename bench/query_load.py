"""Analysts hammering the projector's ClickHouse HTTP interface, for the freshness-under-load row.

``bench.pipeline``'s end-to-end run has two steady phases of equal length and rate; during
the second, this load runs against the interface the projector host serves: ``threads``
clients each looping over heavy reads (attribution over every touch, the lead funnel,
``FINAL`` scans) with stock clickhouse-connect, plus a burst of ``burst`` parallel plain
HTTP queries every few seconds. It counts what it got (answers, 202 refusals, other
errors), so the table shows the load was real.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

HEAVY = (
    "SELECT model, channel, sum(weight) FROM leadflow.attribution(lookback_days = 90, "
    "half_life_days = 7) GROUP BY model, channel",
    "SELECT source, countIf(max_rank >= 3), sum(revenue) FROM leadflow.v_lead_funnel "
    "GROUP BY source",
    "SELECT channel, uniqExact(person_id) FROM leadflow.v_person_events GROUP BY channel",
    "SELECT count(), uniqExact(event_id) FROM leadflow.v_events",
)
BURST_SQL = "SELECT kind, count() FROM leadflow.v_events GROUP BY kind"


@dataclass
class QueryLoad:
    """Runs until :meth:`stop`; then ``answered``/``refused``/``failed`` say what happened."""

    url: str
    threads: int = 4
    burst: int = 50
    burst_every: float = 5.0
    answered: int = 0
    refused: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _note(self, response: httpx.Response | None) -> None:
        with self._lock:
            code = "transport" if response is None else response.headers.get(
                "X-ClickHouse-Exception-Code", ""
            )  # fmt: skip
            if code == "":
                self.answered += 1
            elif code == "202":
                self.refused += 1
            else:
                self.failed += 1
                self.errors[code] = self.errors.get(code, 0) + 1

    def _ask(self, client: httpx.Client, sql: str) -> None:
        try:
            self._note(client.post(self.url, content=sql.encode(), timeout=120))
        except httpx.HTTPError:
            self._note(None)

    def _reader(self, offset: int) -> None:
        with httpx.Client() as client:
            i = offset
            while not self._stop.is_set():
                self._ask(client, HEAVY[i % len(HEAVY)])
                i += 1

    def _bursts(self) -> None:
        with httpx.Client() as client, ThreadPoolExecutor(self.burst) as pool:
            while not self._stop.wait(self.burst_every):
                list(pool.map(lambda _i: self._ask(client, BURST_SQL), range(self.burst)))

    def start(self) -> None:
        """Start the readers and the bursts."""
        self._workers = [
            threading.Thread(target=self._reader, args=(i,), daemon=True)
            for i in range(self.threads)
        ]
        self._workers.append(threading.Thread(target=self._bursts, daemon=True))
        for worker in self._workers:
            worker.start()

    def stop(self) -> str:
        """Stop and describe what the load did."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=180)
        return (
            f"{self.threads} clients looping over attribution/funnel/FINAL reads + {self.burst} "
            f"parallel every {self.burst_every:g} s: {self.answered} answered, {self.refused} "
            f"refused (202), {self.failed} other errors {self.errors or ''}"
        ).rstrip()
