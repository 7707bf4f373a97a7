"""The one function that builds state-store keys."""

from __future__ import annotations

# Unit separator: never part of an id, so joined parts cannot collide.
_SEP = b"\x1f"


def state_key(*parts: str) -> bytes:
    r"""A state key from its parts; a single part is its UTF-8 bytes unchanged.

    Single-part keys match what the faust worker wrote to the same changelog topics, so a
    deployment keeps its state across the move. Issue 19 (workspace in every key) adds the
    workspace as a part here, in one place.

    Example:
        >>> state_key("lead-1"), state_key("ws", "lead-1")
        (b'lead-1', b'ws\x1flead-1')
    """
    if not parts:
        raise ValueError("a state key needs at least one part")
    return _SEP.join(part.encode() for part in parts)
