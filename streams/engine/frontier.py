"""The forward frontier's records on ``leadflow.events.by-lead`` (``processors/frontier.py``).

- A record a redirect forwards carries header ``leadflow.fwd`` = the hex of the release key
  it keeps (:func:`~leadflow.streams.engine.release.key_bytes` of the released record) and
  ``leadflow.hops``; the survivor's partition buffers it under that key.
- A **forward marker** (header ``leadflow.marker`` = ``forward``): value = JSON
  ``{"<by-lead partition>": [<hex or null per hop count>, ...]}``, "no more hop-``h``
  forwards sorting before ``p[h]`` will come from that partition". A list shorter than
  ``MAX_HOPS`` repeats its last entry (most promises are equal at every hop).

One :class:`FrontMarkers` per worker process sends its lead tasks' promises once per batch,
one marker per by-lead partition, in the batch's transaction and after its forwards: the
identity stage's :class:`~leadflow.streams.stages.identity.Markers`, with hop vectors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from leadflow.processors.merges import MAX_HOPS
from leadflow.streams.control import MARKER, ControlRecordError
from leadflow.streams.engine.stage import TaskContext
from leadflow.streams.topics import EVENTS_BY_LEAD

FORWARD_MARKER = "forward"  # lead stage -> events.by-lead: per-hop forward promises
FORWARD_SORT = "leadflow.fwd"  # the release key a forwarded record keeps (hex)

Marks = tuple[bytes | None, ...]


def encode_fronts(promises: Mapping[int, Marks]) -> bytes:
    """A forward marker's value.

    Example:
        >>> encode_fronts({1: (b"a", b"b", b"b"), 0: (None, None)})
        b'{"0":[null],"1":["61","62"]}'
    """
    out: dict[str, list[str | None]] = {}
    for source, marks in sorted(promises.items()):
        packed = [None if m is None else m.hex() for m in marks]
        while len(packed) > 1 and packed[-1] == packed[-2]:
            packed.pop()
        out[str(source)] = packed
    return json.dumps(out, separators=(",", ":")).encode()


def parse_fronts(value: bytes) -> dict[int, Marks]:
    """The promises of a forward marker, ``MAX_HOPS`` per partition.

    Example:
        >>> parse_fronts(b'{"1":["61","62"]}')[1][:3]
        (b'a', b'b', b'b')

    Raises:
        ControlRecordError: not what :func:`encode_fronts` writes.
    """
    try:
        raw = json.loads(value)
        out: dict[int, Marks] = {}
        for source, packed in raw.items():
            marks = [None if m is None else bytes.fromhex(m) for m in packed]
            if not 1 <= len(marks) <= MAX_HOPS:
                raise ValueError(f"{len(marks)} promises")
            out[int(source)] = (*marks, *[marks[-1]] * (MAX_HOPS - len(marks)))
        return out
    except (ValueError, AttributeError, TypeError) as exc:
        raise ControlRecordError(f"forward marker {value[:60]!r}: {exc}") from None


@dataclass
class FrontMarkers:
    """One worker process's lead tasks' forward promises, sent once per batch.

    A task that took a record notes how to compute its promises; the first ``flush`` of a
    batch (after every record of the batch, so after every release) computes them once per
    noted task and sends one marker per by-lead partition with every promise that moved. A
    task (re)built from its committed store is noted again with nothing promised, so
    nothing of an aborted batch is ever promised (it is recomputed from what committed).
    """

    targets: int  # partitions of events.by-lead: each gets every marker
    noted: dict[int, Callable[[], Marks]] = field(default_factory=dict)
    promised: dict[int, Marks] = field(default_factory=dict)
    sent: int = 0  # marker records sent (one per target per batch that moved): a cost

    def note(self, partition: int, promises: Callable[[], Marks]) -> None:
        """``partition`` took a record in the open batch: its promises may have moved."""
        self.noted[partition] = promises

    def reset(self, partition: int, promises: Callable[[], Marks]) -> None:
        """A task was (re)built for ``partition``: what it promises next is sent."""
        self.promised.pop(partition, None)
        self.noted[partition] = promises

    def flush(self, ctx: TaskContext) -> None:
        """Send the promises that moved to every by-lead partition (once per batch)."""
        moved: dict[int, Marks] = {}
        for partition, promises in self.noted.items():
            marks = promises()
            if self.promised.get(partition) != marks:
                moved[partition] = marks
        self.noted.clear()
        if not moved:
            return
        value = encode_fronts(moved)
        headers = {MARKER: FORWARD_MARKER.encode()}
        for target in range(self.targets):
            ctx.send(EVENTS_BY_LEAD, None, value, dict(headers), partition=target)
        self.sent += self.targets
        self.promised.update(moved)
