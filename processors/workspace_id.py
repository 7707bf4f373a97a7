r"""The one rule for workspace ids: what a tenant may be called.

Workspace ids end up in Kafka record keys, key-topic records, ClickHouse DDL (as string
literals: DDL cannot bind parameters), database names and log lines, so they are restricted to
characters that need no quoting anywhere. The whole value must match: ``re.match`` with ``$``
would let ``"wsA\n"`` through (``$`` also matches before a final newline).
"""

from __future__ import annotations

import re

from leadflow.processors.errors import LeadflowError

WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
RULE = (
    f"must match {WORKSPACE_ID.pattern} (letters, digits, '_', '.', ':', '-'; at most 100, "
    "nothing else, not even a trailing newline)"
)


class InvalidWorkspaceId(LeadflowError):
    """A workspace id outside :data:`WORKSPACE_ID`."""


def is_workspace_id(value: object) -> bool:
    r"""Whether ``value`` is a valid workspace id, all of it.

    Example:
        >>> is_workspace_id("acme-eu"), is_workspace_id("wsA\n"), is_workspace_id("")
        (True, False, False)
    """
    return isinstance(value, str) and WORKSPACE_ID.fullmatch(value) is not None


def check_workspace_id(value: str) -> str:
    """Return ``value`` if it is a valid workspace id, else raise :class:`InvalidWorkspaceId`.

    Example:
        >>> check_workspace_id("acme")
        'acme'
        >>> check_workspace_id("x' OR 1=1 --")
        Traceback (most recent call last):
        ...
        leadflow.processors.workspace_id.InvalidWorkspaceId: workspace id "x' OR 1=1 --" must ...
    """
    if not is_workspace_id(value):
        raise InvalidWorkspaceId(f"workspace id {value!r} {RULE}")
    return value
