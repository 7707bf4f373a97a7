"""The forward frontier: per-hop promises that order records forwarded through redirects.

A redirect forwards a released record to its survivor's partition, where it keeps its
release key and waits for its turn (``processors/merges.py``, "Forwards"). So a partition
may release key ``k`` only once no forward sorting before ``k`` can still reach it. Every
partition promises, per hop count ``h`` (1..``MAX_HOPS``), "I send no more hop-``h``
forwards sorting before ``p[h]``", after its forwards, to every partition:

- hop 1 (forwards of records the identity stage sent): bounded by the partition's inbound
  bound (records not yet routed here sort at or after ``L - D``) and its first buffered
  hop-0 record that may be forwarded;
- hop ``h + 1``: bounded by its first buffered hop-``h`` record that may be forwarded and
  by the hop-``h`` promises it has taken from every partition (what may still be on its
  way here).

A promise never waits for one of the same or a higher hop, so there is no cycle. A
partition releases ``k`` once every partition has spoken and no promise it took sorts
before ``k`` (:func:`gate`). The reference runs this protocol in ``demo/inprocess.py``
(``markers=True``), the worker in ``streams/stages/lead.py``; the key type is whatever the
caller sorts by (a ``ReleaseKey``, or release-key bytes).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from typing import TypeVar

from leadflow.processors.merges import MAX_HOPS
from leadflow.processors.ordering import ReleaseKey

# The reference sorts by ReleaseKey, the worker by release-key bytes (ints: the examples).
_Key = TypeVar("_Key", ReleaseKey, bytes, int)


def promise(
    bound: _Key | None,
    own: Mapping[int, _Key],
    views: Mapping[int, Sequence[_Key | None]],
    peers: int,
    relays: bool = True,
) -> tuple[_Key | None, ...]:
    """What a partition can promise now, per hop count 1..``MAX_HOPS``.

    Args:
        bound: every record the identity stage has still to send here sorts at or after
            this (``None``: not every inbound partition has promised yet).
        own: per hop count, the first buffered record that may still be forwarded.
        views: the promises taken from each partition (every one of ``peers``).
        peers: how many partitions promise.
        relays: whether a forward this partition receives may be forwarded again
            (:func:`relays`); if not, the hop-``h + 1`` promise does not wait for the
            hop-``h`` promises taken, so it moves with the inbound bound at once.

    Example:
        >>> p = promise(50, {0: 20, 1: 40}, {0: (30,) * 8, 1: (10,) * 8}, 2)
        >>> p[:3]
        (20, 10, 10)
        >>> promise(50, {}, {0: (60,) * 8}, 2)[:2]  # partition 1 has not spoken
        (50, None)
    """
    marks: list[_Key | None] = []
    for hop in range(1, MAX_HOPS + 1):
        if bound is None:
            marks.append(None)
            continue
        parts = [bound]
        if hop - 1 in own:
            parts.append(own[hop - 1])
        if hop > 1 and relays:
            taken = [views[q][hop - 2] if q in views else None for q in range(peers)]
            if any(t is None for t in taken):
                marks.append(None)
                continue
            parts.extend(t for t in taken if t is not None)
        marks.append(min(parts))
    return tuple(marks)


def gate(views: Mapping[int, Sequence[_Key | None]], peers: int) -> _Key | None:
    """The lowest promise taken (``None`` until every partition spoke with every hop).

    Example:
        >>> gate({0: (5, 7), 1: (6, 4)}, 2), gate({0: (5, 7)}, 2), gate({0: (5, None)}, 1)
        (4, None, None)
    """
    marks = [m for q in range(peers) for m in views.get(q, (None,))]
    if not marks or any(m is None for m in marks):
        return None
    return min(m for m in marks if m is not None)


def first_forwards(
    held: Sequence[tuple[_Key, str, int, bool]], redirects: set[str] | frozenset[str]
) -> dict[int, _Key]:
    """Per hop count, the first buffered record that may still be forwarded.

    ``held``: every buffered record as ``(key, lead, hops, merged side)`` in key order,
    where *merged side* marks a merge request for the lead it absorbs. A record may be
    forwarded when its lead is a redirect, or a merge request absorbing its lead sorts
    before it.

    Example:
        >>> held = [(1, "a", 0, False), (2, "b", 0, True), (3, "b", 1, False), (4, "c", 0, False)]
        >>> first_forwards(held, {"c"})
        {1: 3, 0: 4}
    """
    merging: set[str] = set()
    first: dict[int, _Key] = {}
    for key, lead, hops, merged_side in held:
        if merged_side:
            merging.add(lead)
            continue
        if (lead in merging or lead in redirects) and hops not in first:
            first[hops] = key
    return first


def relays(
    chained: bool,
    surviving: Collection[str],
    absorbing: Collection[str],
    targets: Container[str],
    redirects: Container[str],
) -> bool:
    """Whether a forward (hop >= 1) sorting before the inbound bound may be forwarded again.

    A forward goes to the survivor ``X`` of a merge and sorts after that merge's requests,
    which share their cause's ``at``: so if it sorts before the inbound bound, ``X``'s
    survivor-side request is here already (released: ``targets``; buffered:
    ``surviving``), and ``X`` forwards it only if it is a redirect by then, its merged-side
    request here already too (released: ``redirects``; buffered: ``absorbing``). With no
    lead on both sides (``chained``: a released survivor that is a redirect, i.e. a
    survivor that merged away later, a chain), nothing received is forwarded before the
    bound, and the hop-``h + 1`` promises need not wait for anyone's hop-``h`` ones.

    Example:
        >>> relays(False, [], [], {"x"}, {"y"}), relays(True, [], [], set(), set())
        (False, True)
        >>> relays(False, ["x"], ["x"], set(), set()), relays(False, [], ["x"], {"x"}, set())
        (True, True)
    """
    return (
        chained
        or any(x in redirects or x in absorbing for x in surviving)
        or any(x in targets for x in absorbing)
    )
