"""What a message carries that its event has no field for: kept in ``extra_json``, or dropped.

The tracking APIs senders rely on keep fields they do not know, and so does the collector: a
known kind keeps the properties and traits it defines no field for in ``extra_json``, one
JSON object shaped like the message (``{"properties": {"plan": "pro"}}``,
``{"traits": {"company": {"plan": "pro"}}}``). That value is free-form and may name a
person, so the collector seals it with the person's key like an email (``processors/pii``):
it opens for whoever holds the key and is erased with the person. Processors never read it.

Only what cannot be stored is dropped, and every path of it is listed (the answer's
``ignored``): SDK and device context the contract has no field for (``context.library``,
``context.device``; device data is kept only as IP and user agent, and only with consent),
a copy of the person's traits on an event that is not about contact data, and the extras of
kinds without ``extra_json`` (a campaign cost belongs to no person, so no key could seal
them). Pure: the same message always leaves the same leftovers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Loc = tuple[str, ...]


@dataclass
class Leftovers:
    """The kept values (nested like the message) and the locations kept or dropped.

    Example:
        >>> left = Leftovers()
        >>> left.keep(("traits", "company", "plan"), "pro")
        >>> left.keep(("traits", "shoe_size"), 44)
        >>> left.drop(("context", "device"))
        >>> left.extra_json()
        '{"traits":{"company":{"plan":"pro"},"shoe_size":44}}'
        >>> left.kept_locs, left.dropped_locs
        ([('traits', 'company', 'plan'), ('traits', 'shoe_size')], [('context', 'device')])
    """

    kept: dict[str, Any] = field(default_factory=dict)
    kept_locs: list[Loc] = field(default_factory=list)
    dropped_locs: list[Loc] = field(default_factory=list)

    def keep(self, loc: Loc, value: Any) -> None:
        """Keep ``value``, found at ``loc`` in the message, in the event's extra fields."""
        node = self.kept
        for part in loc[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # cannot happen for a JSON message; never lose it
                child = node[part] = {"": child}
            node = child
        node[loc[-1]] = value
        self.kept_locs.append(loc)

    def keep_all(self, where: Loc, values: Mapping[str, Any]) -> None:
        """Keep every member of ``values`` (an object found at ``where``)."""
        for name, value in values.items():
            self.keep((*where, name), value)

    def drop(self, loc: Loc) -> None:
        """Note that the member at ``loc`` is not stored."""
        self.dropped_locs.append(loc)

    def drop_kept(self) -> None:
        """Nothing kept can be stored (the kind has no ``extra_json``): all of it is dropped."""
        self.dropped_locs.extend(self.kept_locs)
        self.kept_locs.clear()
        self.kept.clear()

    def extra_json(self) -> str | None:
        """The kept values as compact, sorted JSON, or ``None`` when nothing was kept."""
        if not self.kept:
            return None
        return json.dumps(
            self.kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
