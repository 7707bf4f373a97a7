"""Domain bounds of amounts and counts: what a sane event may claim, per workspace.

A deal won for 1.7e308 or -1e9, or a campaign cost of -5e300, is accepted by every type check
and then poisons every report (revenue ``inf``, LTV:CAC ``-inf``). Each bounded field has an
inclusive range; a value outside it (or not finite) refuses the whole event with a reason that
names the field, the value and the limit, at the collector (per event, to the dead-letter
topic) and again where events enter the worker and the projector (events produced to Kafka
without the collector). Defaults suit B2B: no negative money or counts, at most a billion per
deal or cost line. A workspace may have its own ranges (``LEADFLOW_BOUNDS_FILE``, read by
:mod:`bounds_load`): e.g. negative cost lines for ad-platform credits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from leadflow.processors.errors import InvalidEvent
from leadflow.processors.events import Event, Kind


@dataclass(frozen=True, slots=True)
class Range:
    """An inclusive range of accepted values.

    Example:
        >>> Range(0, 10).holds(10), Range(0, 10).holds(-0.5), Range(0, 10).holds(math.inf)
        (True, False, False)
    """

    min: float
    max: float

    def holds(self, value: float) -> bool:
        """Whether ``value`` is finite and within the range."""
        return math.isfinite(value) and self.min <= value <= self.max


@dataclass(frozen=True, slots=True)
class Bounds:
    """The ranges of one workspace, one per bounded quantity.

    Attributes:
        deal_amount: ``amount`` of ``deal_won`` and ``deal_lost``.
        campaign_cost: ``amount`` of one ``campaign_cost`` line (a channel, campaign and day).
        company_size: employees, of ``form_submitted``, ``identify`` and ``group``.
        minutes_attended: of ``webinar_attended`` (a day at most).
    """

    deal_amount: Range = Range(0.0, 1e9)
    campaign_cost: Range = Range(0.0, 1e9)
    company_size: Range = Range(0.0, 1e7)
    minutes_attended: Range = Range(0.0, 24 * 60.0)


# kind -> (payload field, the Bounds attribute that bounds it)
BOUNDED: Mapping[Kind, tuple[tuple[str, str], ...]] = MappingProxyType(
    {
        Kind.DEAL_WON: (("amount", "deal_amount"),),
        Kind.DEAL_LOST: (("amount", "deal_amount"),),
        Kind.CAMPAIGN_COST: (("amount", "campaign_cost"),),
        Kind.FORM_SUBMITTED: (("company_size", "company_size"),),
        Kind.IDENTIFY: (("company_size", "company_size"),),
        Kind.GROUP: (("company_size", "company_size"),),
        Kind.WEBINAR_ATTENDED: (("minutes_attended", "minutes_attended"),),
    }
)
QUANTITIES = frozenset(Bounds.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class BoundsTable:
    """The default bounds and every workspace's own.

    Example:
        >>> t = BoundsTable(workspaces={"acme": Bounds(campaign_cost=Range(-1e4, 1e6))})
        >>> t.of("acme").campaign_cost.min, t.of("globex").campaign_cost.min
        (-10000.0, 0.0)
    """

    default: Bounds = Bounds()
    workspaces: Mapping[str, Bounds] = field(default_factory=dict)

    def of(self, workspace_id: str) -> Bounds:
        """The bounds that apply to ``workspace_id``."""
        return self.workspaces.get(workspace_id, self.default)


@dataclass(frozen=True, slots=True)
class Violation:
    """One value out of its range: which field, and why (for the sender and the logs)."""

    field: str
    reason: str


def _number(value: object) -> str:
    # 15 significant digits: 1000000001 must not print as the limit 1e+09 it breaks.
    return f"{value:.15g}" if isinstance(value, float) else str(value)


def violations(kind: Kind, payload: Mapping[str, Any], bounds: Bounds) -> list[Violation]:
    """Every bounded field of a ``kind`` payload whose value is outside its range.

    Example:
        >>> violations(Kind.DEAL_WON, {"amount": -1e9}, Bounds())
        [Violation(field='amount', reason='-1000000000 is below the minimum 0 (deal_amount)')]
        >>> violations(Kind.DEAL_WON, {"amount": -1e9}, Bounds(deal_amount=Range(-1e9, 0)))
        []
        >>> violations(Kind.DEAL_WON, {"amount": 1.7e308}, Bounds())[0].reason
        '1.7e+308 is above the maximum 1000000000 (deal_amount)'
    """
    found: list[Violation] = []
    for name, quantity in BOUNDED.get(kind, ()):
        value = payload.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # absent (optional) or not a number: the type checks own that
        allowed: Range = getattr(bounds, quantity)
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float: certainly above every maximum
            number = math.inf
        if allowed.holds(number):
            continue
        if math.isnan(number) or (math.isinf(number) and isinstance(value, float)):
            reason = f"{_number(value)} is not a finite number"
        elif value < allowed.min:
            reason = f"{_number(value)} is below the minimum {_number(allowed.min)} ({quantity})"
        else:
            reason = f"{_number(value)} is above the maximum {_number(allowed.max)} ({quantity})"
        found.append(Violation(name, reason))
    return found


def check_bounds(event: Event, table: BoundsTable) -> None:
    """Refuse an event with an amount or count outside its workspace's bounds.

    Example:
        >>> cost = Event("c", Kind.CAMPAIGN_COST, "ws", 1, 1,
        ...              payload={"channel": "ads", "amount": -5e300})
        >>> check_bounds(cost, BoundsTable())
        Traceback (most recent call last):
        ...
        leadflow.processors.errors.InvalidEvent: event c out of bounds: amount -5e+300 is ...

    Raises:
        InvalidEvent: naming each field, its value and the limit it breaks.
    """
    found = violations(event.kind, event.payload, table.of(event.workspace_id))
    if found:
        detail = "; ".join(f"{v.field} {v.reason}" for v in found)
        raise InvalidEvent(f"event {event.event_id} out of bounds: {detail}")
