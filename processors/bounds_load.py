"""Reading the bounds file (``LEADFLOW_BOUNDS_FILE``): defaults and per-workspace ranges.

The file is YAML, checked as strictly as the policy (errors name the file, line and field)::

    version: 1
    default:                      # every workspace without its own entry
      deal_amount: {max: 50000000}
    workspaces:
      acme:                       # layered on the default: only what differs
        campaign_cost: {min: -10000}   # ad-platform credits are negative lines

A range given with only ``min`` or ``max`` keeps the other end of what it refines (the
built-in default, or the file's ``default`` for a workspace).
"""

from __future__ import annotations

from pathlib import Path

from leadflow.processors.bounds import QUANTITIES, Bounds, BoundsTable, Range
from leadflow.processors.errors import PolicyError
from leadflow.processors.evolve import evolve
from leadflow.processors.policy_yaml import Node, optional, required
from leadflow.processors.workspace_id import RULE, is_workspace_id

_TOP = frozenset({"version", "default", "workspaces"})
_RANGE = frozenset({"min", "max"})


def _range(n: Node, base: Range) -> Range:
    m = n.mapping(_RANGE)
    low = optional(m, "min", Node.num, base.min)
    high = optional(m, "max", Node.num, base.max)
    if low > high:
        raise n.fail(f"min {low:g} is above max {high:g}")
    return Range(low, high)


def _bounds(n: Node, base: Bounds) -> Bounds:
    m = n.mapping(QUANTITIES)
    changes = {name: _range(child, getattr(base, name)) for name, child in m.items()}
    return evolve(base, **changes)


def parse_bounds(text: str, source: str = "<bounds>") -> BoundsTable:
    r"""Parse and check a bounds document.

    Example:
        >>> t = parse_bounds("version: 1\nworkspaces:\n  acme:\n    deal_amount: {max: 5}\n")
        >>> t.of("acme").deal_amount, t.of("other").deal_amount
        (Range(min=0.0, max=5.0), Range(min=0.0, max=1000000000.0))
        >>> parse_bounds("version: 1\ndefault:\n  deal_amount: {min: 3, max: 1}\n", "b.yaml")
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.PolicyError: b.yaml:3 default.deal_amount: min 3 is above max 1

    Raises:
        PolicyError: naming ``source:line field.path`` and what is wrong.
    """
    root = Node.document(text, source)
    if root is None:
        return BoundsTable()
    m = root.mapping(_TOP)
    version = required(m, "version", root)
    if version.integer() != 1:
        raise version.fail("only version 1 is supported")
    default = _bounds(m["default"], Bounds()) if "default" in m else Bounds()
    workspaces: dict[str, Bounds] = {}
    if "workspaces" in m:
        for ws, node in m["workspaces"].mapping().items():
            if not is_workspace_id(ws):
                raise node.fail(f"workspace id {ws!r} {RULE}")
            workspaces[ws] = _bounds(node, default)
    return BoundsTable(default=default, workspaces=workspaces)


def load_bounds(path: Path | None) -> BoundsTable:
    """The bounds in ``path``, or the built-in defaults when no file is configured.

    Raises:
        PolicyError: the file cannot be read or is invalid (names file, line, field).
    """
    if path is None:
        return BoundsTable()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the bounds file ({exc.strerror})") from None
    return parse_bounds(text, str(path))
