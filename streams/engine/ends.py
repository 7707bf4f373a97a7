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

Riding an outage out must not become a silent blind spot: a partition left unanswered for
more than :data:`UNANSWERED_WARN_SECONDS` is logged (``worker.end_unanswered``, at most once
a minute), and again when it answers (``worker.end_answered``) or when a rebalance takes it
away first (``worker.end_unwatched``). A round that fails as a whole is logged at most once
a minute too (``worker.end_offsets_failed``, with the failed rounds so far), and the first
round that works again once (``worker.end_offsets_recovered``). The projector's stall watch
uses the same thread; its lines start with ``projector.`` instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from leadflow.streams.logs import Throttle, get_logger

log = get_logger(__name__)

TP = tuple[str, int]

# How long a partition's end may go unanswered before it is logged. The stall watch acts on
# a stuck partition within 60 s (a re-seek after LEADFLOW_WORKER_STALL_SECONDS, 30 s, an
# exit one period later) and stops judging one whose end is older than 15 s (three looks):
# a partition unanswered past 60 s has been out of its sight longer than it needs to act.
# A leader election takes seconds and the session 16 broker restarts left the broker gone
# 26-29 s, so those stay quiet. Measured from the last answer, or from when the partition
# was first watched if it never answered (a worker starting into an outage).
UNANSWERED_WARN_SECONDS = 60.0
# At most one ``worker.end_unanswered`` line this often (it names every partition past the
# bound), so an outage of many minutes leaves a line a minute, not one per round.
UNANSWERED_LOG_EVERY = 60.0


class EndOffsets:
    """Polls the broker for the ends of the partitions it is told to watch.

    Args:
        client_config: librdkafka settings (bootstrap, security) for an admin client.
        every: seconds between two requests (also each request's timeout).
        who: the process, the first part of each log line's event (``worker.end_answered``).
        see: where the operations guide explains an unanswered partition.
    """

    def __init__(
        self,
        client_config: dict[str, str | int | float | bool],
        every: float,
        who: str = "worker",
        see: str = 'docs/operations.md, "Worker crash or kill"',
    ) -> None:
        self._config = client_config
        self.every = every
        self.who = who
        self.see = see
        self._lock = threading.Lock()
        self._wanted: frozenset[TP] = frozenset()
        self._ends: dict[TP, tuple[int, float]] = {}  # tp -> (end, monotonic time of answer)
        self._highs: dict[TP, tuple[int, float]] = {}  # tp -> (high watermark, time)
        # Per watched partition: consecutive rounds without both answers, and since when
        # (the monotonic time of its last full answer, or of its first watch if none came).
        self._unanswered: dict[TP, int] = {}
        self._since: dict[TP, float] = {}
        self._overdue: set[TP] = set()  # past the bound: its next answer is logged
        self._logged = Throttle(UNANSWERED_LOG_EVERY)
        self._failed = 0  # consecutive rounds whose ask raised
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: AdminClient | None = None

    def watch(self, partitions: Iterable[TP]) -> None:
        """Ask for these partitions from now on (the owned inputs, after each rebalance).

        A partition dropped while past the bound is logged (``worker.end_unwatched``): its
        unanswered spell ends here, without the ``worker.end_answered`` line, and if it is
        assigned again its count starts over.
        """
        now = time.monotonic()
        with self._lock:
            wanted = frozenset(partitions)
            dropped = {tp: (now - self._since[tp], self._unanswered.get(tp, 0))
                       for tp in sorted(self._overdue - wanted)}  # fmt: skip
            self._wanted = wanted
            self._ends = {tp: v for tp, v in self._ends.items() if tp in self._wanted}
            self._highs = {tp: v for tp, v in self._highs.items() if tp in self._wanted}
            # A partition kept across a rebalance keeps its clock; a new one starts it now,
            # so one that never answers is logged a bound after it was first watched.
            self._since = {tp: self._since.get(tp, now) for tp in self._wanted}
            self._unanswered = {tp: n for tp, n in self._unanswered.items() if tp in self._wanted}
            self._overdue &= self._wanted
        for tp, (seconds, rounds) in dropped.items():
            log.warning(
                f"{self.who}.end_unwatched",
                partition=f"{tp[0]}:{tp[1]}",
                unanswered_seconds=round(seconds),
                rounds=rounds,
                meaning="no longer owned (a rebalance) before the broker told its end again",
            )

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

    def unanswered(self) -> dict[TP, int]:
        """Consecutive rounds each watched partition went without an answer (0s left out)."""
        with self._lock:
            return {tp: n for tp, n in self._unanswered.items() if n}

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
            self._round()
            self._stop.wait(self.every)

    def _round(self) -> None:
        """One :meth:`ask`; a failure is logged at most once a minute, its end once."""
        try:
            self.ask()
        except Exception:  # a watch aid: never let it die quietly, never stop the worker
            self._failed += 1
            # Through a broker outage every round may fail: a line a minute, not a round.
            if self._logged.due("end_offsets_failed"):
                log.exception(f"{self.who}.end_offsets_failed", failed_rounds=self._failed)
            return
        if self._failed:
            log.info(f"{self.who}.end_offsets_recovered", failed_rounds=self._failed)
            self._failed = 0

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
            # Answered means both: the stall watch needs the end, the open-tail watch both.
            asked = [tp for tp in wanted if tp in self._wanted]
            back, late = self._count(asked, {tp for tp in asked if tp in ends and tp in highs})
            never = [tp for tp in late if tp not in self._ends]
        # Logged outside the lock: the loop's thread reads ends under it.
        for tp, (seconds, rounds) in back.items():
            log.info(
                f"{self.who}.end_answered",
                partition=f"{tp[0]}:{tp[1]}",
                unanswered_seconds=round(seconds),
                rounds=rounds,
            )
        if late and self._logged.due("end_unanswered"):
            log.warning(
                f"{self.who}.end_unanswered",
                seconds={f"{t}:{p}": round(s) for (t, p), (s, _) in late.items()},
                rounds={f"{t}:{p}": n for (t, p), (_, n) in late.items()},
                never_answered=[f"{t}:{p}" for t, p in never],
                meaning="the broker has not told these partitions' ends: "
                "the stall watch does not judge them meanwhile",
                see=self.see,
            )
        return len(ends)

    def _count(
        self, asked: list[TP], answered: set[TP]
    ) -> tuple[dict[TP, tuple[float, int]], dict[TP, tuple[float, int]]]:
        """Count one round's answers (with the lock held).

        Returns:
            The partitions past :data:`UNANSWERED_WARN_SECONDS` that answered again, and
            those still unanswered past it, each with seconds since its last answer and
            consecutive unanswered rounds.
        """
        now = time.monotonic()
        back: dict[TP, tuple[float, int]] = {}
        late: dict[TP, tuple[float, int]] = {}
        for tp in asked:
            since = self._since.setdefault(tp, now)
            if tp in answered:
                if tp in self._overdue:
                    back[tp] = (now - since, self._unanswered.get(tp, 0))
                self._since[tp] = now
                self._unanswered[tp] = 0
                self._overdue.discard(tp)
                continue
            self._unanswered[tp] = self._unanswered.get(tp, 0) + 1
            if now - since > UNANSWERED_WARN_SECONDS:
                self._overdue.add(tp)
                late[tp] = (now - since, self._unanswered[tp])
        return back, late

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
                continue  # that leader did not answer: its last answer grows stale (ask counts it)
            if offset >= 0:
                answered[(str(tp.topic), int(tp.partition))] = (offset, time.monotonic())
        return answered
