"""The end of each input partition as the broker reports it now, asked from a side thread.

The stall watch (``Engine._watch``) compares a partition's end with where the worker
stands. The consumer's own cached end (``get_watermark_offsets(cached=True)``) is refreshed
only by fetch responses, so a partition the consumer stopped fetching keeps an old end and
looks caught up: exactly the stall the watch is for. This thread asks the broker instead,
every ``every`` seconds, with one ``ListOffsets`` request per leader (read_committed: the
end is the last stable offset, as far as a read_committed consumer can read), and never
blocks the worker's loop. A partition whose leader does not answer keeps its last answer
with its age; the watch does not judge a partition whose end is stale (an outage is
ridden out, not mistaken for a stall). It asks for the high watermark too
(read_uncommitted): a last stable offset that stays below it is an open transaction
holding every read_committed reader (:class:`~leadflow.streams.stall.OpenTailWatch`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from leadflow.streams.logs import get_logger

log = get_logger(__name__)

TP = tuple[str, int]


class EndOffsets:
    """Polls the broker for the ends of the partitions it is told to watch.

    Args:
        client_config: librdkafka settings (bootstrap, security) for an admin client.
        every: seconds between two requests (also each request's timeout).
    """

    def __init__(self, client_config: dict[str, str | int | float | bool], every: float) -> None:
        self._config = client_config
        self.every = every
        self._lock = threading.Lock()
        self._wanted: frozenset[TP] = frozenset()
        self._ends: dict[TP, tuple[int, float]] = {}  # tp -> (end, monotonic time of answer)
        self._highs: dict[TP, tuple[int, float]] = {}  # tp -> (high watermark, time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: AdminClient | None = None

    def watch(self, partitions: Iterable[TP]) -> None:
        """Ask for these partitions from now on (the owned inputs, after each rebalance)."""
        with self._lock:
            self._wanted = frozenset(partitions)
            self._ends = {tp: v for tp, v in self._ends.items() if tp in self._wanted}
            self._highs = {tp: v for tp, v in self._highs.items() if tp in self._wanted}

    def end(self, tp: TP, now: float, max_age: float) -> int | None:
        """The partition's end if the broker told it within ``max_age`` seconds of ``now``."""
        with self._lock:
            found = self._ends.get(tp)
        if found is None or now - found[1] > max_age:
            return None
        return found[0]

    def tail(self, tp: TP, now: float, max_age: float) -> tuple[int, int] | None:
        """The partition's end and high watermark if both were told within ``max_age``."""
        with self._lock:
            end, high = self._ends.get(tp), self._highs.get(tp)
        if end is None or high is None or now - min(end[1], high[1]) > max_age:
            return None
        return end[0], high[0]

    def start(self) -> None:
        """Start asking (a daemon thread with its own admin client)."""
        self._admin = AdminClient(self._config)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="end-offsets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop asking; returns once the thread ended (at most one request later)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every + 5.0)
            self._thread = None
        self._admin = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ask()
            except Exception:  # a watch aid: never let it die quietly, never stop the worker
                log.exception("worker.end_offsets_failed")
            self._stop.wait(self.every)

    def ask(self) -> int:
        """Ask for every watched partition's end and high watermark; returns the ends answered."""
        with self._lock:
            wanted = sorted(self._wanted)
        if not wanted or self._admin is None:
            return 0
        ends = self._latest(wanted, IsolationLevel.READ_COMMITTED)
        highs = self._latest(wanted, IsolationLevel.READ_UNCOMMITTED)
        with self._lock:
            self._ends.update({tp: v for tp, v in ends.items() if tp in self._wanted})
            self._highs.update({tp: v for tp, v in highs.items() if tp in self._wanted})
        return len(ends)

    def _latest(self, wanted: list[TP], level: IsolationLevel) -> dict[TP, tuple[int, float]]:
        assert self._admin is not None
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): latest for t, p in wanted},
            isolation_level=level,
            request_timeout=self.every,
        )
        answered: dict[TP, tuple[int, float]] = {}
        for tp, future in futures.items():
            try:
                offset = future.result().offset
            except KafkaException:
                continue  # that leader did not answer: its last answer grows stale
            if offset >= 0:
                answered[(str(tp.topic), int(tp.partition))] = (offset, time.monotonic())
        return answered
