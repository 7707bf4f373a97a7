"""Segment's and RudderStack's reserved traits, as the contact fields of the event contract.

Trackers describe a person in their own vocabulary: Segment's spec has ``firstName``, a
``company`` object (``{name, employee_count, industry, plan}``), ``employees`` on group
calls and an ``address`` object; forms and enrichment tools send company sizes as text
(``"250"``, ``"51-200"``, ``"1000+"``). This module turns those shapes into the flat
contact fields (``first_name``, ``company``, ``company_size``...) and returns the parts that
had no place (``company.plan``), so the mapping keeps them with the event's extra fields.
Pure functions: the same traits always give the same fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Segment's camelCase spellings of the contact fields.
ALIASES = {
    "firstName": "first_name",
    "lastName": "last_name",
    "firstname": "first_name",
    "lastname": "last_name",
    "jobTitle": "title",
    "job_title": "title",
    "companySize": "company_size",
    "employees": "company_size",
    "employee_count": "company_size",
    "numberOfEmployees": "company_size",
}
# Where the company object's members go (Segment spec: company.name, .employee_count, ...).
COMPANY_MEMBERS = {
    "name": "company",
    "employee_count": "company_size",
    "employees": "company_size",
    "size": "company_size",
    "industry": "industry",
}
ADDRESS_MEMBERS = {"country": "country"}

_NUMBER = r"\d{1,3}(?:,\d{3})+|\d+"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|\u2013|\u2014|to)\s*({_NUMBER})\s*$", re.IGNORECASE)
_PLUS = re.compile(rf"^\s*({_NUMBER})\s*\+\s*$")
_PLAIN = re.compile(rf"^\s*({_NUMBER})(?:\.0+)?\s*$")


@dataclass(frozen=True, slots=True)
class Contact:
    """Traits rewritten as contact fields.

    Attributes:
        fields: the traits with reserved shapes flattened (unknown names are kept as they
            are; the caller decides what a kind stores).
        unmapped: members of the reserved objects that have no contact field, as
            ``(location, value)`` (``(("company", "plan"), "pro")``).
        warnings: ``(relative path, message)`` for values stored differently than sent.
    """

    fields: dict[str, Any]
    unmapped: tuple[tuple[tuple[str, str], Any], ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()


def company_size(value: Any) -> tuple[Any, str | None]:
    """A company size as an integer, from a number, a numeric string or a size range.

    A range is stored as its lower bound (the only size it guarantees: ``"1000+"`` has no
    other) and the second value says so, for the answer's ``warnings``. Anything else is
    returned unchanged for the type check to name.

    Example:
        >>> company_size("250"), company_size("1,200")
        ((250, None), (1200, None))
        >>> company_size("51-200")
        (51, 'the range 51-200 is stored as its lower bound 51')
        >>> company_size("10,000+")[0], company_size(42.0)
        (10000, (42.0, None))
        >>> company_size("lots")
        ('lots', None)
    """
    if not isinstance(value, str):
        return value, None
    plain = _PLAIN.match(value)
    if plain:
        return int(plain.group(1).replace(",", "")), None
    ranged = _RANGE.match(value) or _PLUS.match(value)
    if ranged:
        low = int(ranged.group(1).replace(",", ""))
        return low, f"the range {value.strip()} is stored as its lower bound {low}"
    return value, None


def _split_name(name: str) -> tuple[str, str | None]:
    first, _, last = name.strip().partition(" ")
    return first, (last.strip() or None)


def account(traits: Mapping[str, Any]) -> Contact:
    """A group call's traits as the account's firmographics (Segment's group spec).

    The group's ``name`` is the company's name, ``employees`` its size; ``industry``,
    ``plan``, ``website`` and ``address.country`` keep their meaning. A ``company`` trait
    wins over ``name`` when both are sent (``name`` is then kept as it is).

    Example:
        >>> a = account({"name": "Initech", "employees": "201-500", "industry": "Software",
        ...              "plan": "enterprise", "address": {"country": "US", "city": "Austin"}})
        >>> sorted(a.fields.items())
        [('company', 'Initech'), ('company_size', 201), ('country', 'US'), ('industry', 'Software'), ('plan', 'enterprise')]
        >>> a.unmapped, a.warnings[0][0]
        (((('address', 'city'), 'Austin'),), 'company_size')
    """  # noqa: E501
    flat = contact(traits, full_name=False)
    fields = dict(flat.fields)
    if "name" in fields and fields.get("company") is None:
        fields["company"] = fields.pop("name")
    return Contact(fields=fields, unmapped=flat.unmapped, warnings=flat.warnings)


def contact(traits: Mapping[str, Any], *, full_name: bool = True) -> Contact:
    """Flatten Segment's reserved traits into contact fields.

    ``full_name``: split Segment's ``name`` trait into first and last name (identify
    traits); a form's ``name`` property may name the form, so forms leave it alone.

    Example:
        >>> c = contact({"firstName": "Ada", "company": {"name": "Acme", "employee_count": "51-200",
        ...              "plan": "pro"}, "address": {"country": "DE", "city": "Berlin"}})
        >>> sorted(c.fields.items())
        [('company', 'Acme'), ('company_size', 51), ('country', 'DE'), ('first_name', 'Ada')]
        >>> c.unmapped
        ((('company', 'plan'), 'pro'), (('address', 'city'), 'Berlin'))
        >>> contact({"name": "Grace Brewster Hopper"}).fields
        {'first_name': 'Grace', 'last_name': 'Brewster Hopper'}
        >>> two = contact({"firstName": "Ada", "first_name": "Adah", "company": "Acme",
        ...                "address": {"country": "DE"}, "country": "FR"})
        >>> two.fields["first_name"], two.fields["country"]
        ('Adah', 'FR')
        >>> two.warnings
        (('firstName', 'differs from first_name, which is stored; not stored'), \
('address.country', 'differs from country, which is stored; not stored'))
    """
    fields: dict[str, Any] = {}
    unmapped: list[tuple[tuple[str, str], Any]] = []
    warnings: list[tuple[str, str]] = []
    # Where each field's value came from: a value sent twice under two spellings or places
    # keeps one, and a different loser is said, not dropped without a word.
    source: dict[str, str] = {}
    nested: dict[str, tuple[str, Any]] = {}

    def lost(loser: str, winner: str) -> None:
        warnings.append((loser, f"differs from {winner}, which is stored; not stored"))

    for key, value in traits.items():
        name = ALIASES.get(key, key)
        if key in ("company", "address") and isinstance(value, dict):
            members = COMPANY_MEMBERS if key == "company" else ADDRESS_MEMBERS
            for member, item in value.items():
                target = members.get(member)
                if target is None:
                    unmapped.append(((key, member), item))
                elif target not in nested:
                    nested[target] = (f"{key}.{member}", item)
                elif nested[target][1] != item:
                    lost(f"{key}.{member}", nested[target][0])
        elif name in fields and name != key:
            if fields[name] != value:
                lost(key, name)  # the snake_case spelling was sent too and wins
        else:
            if name in fields and fields[name] != value:
                lost(source[name], key)
            fields[name], source[name] = value, key
    for name, (where, value) in nested.items():
        if name not in fields:
            fields[name], source[name] = value, where
        elif fields[name] != value:
            lost(where, source[name])  # a flat trait wins over the object's member
    whole = fields.get("name") if full_name else None
    if isinstance(whole, str) and whole.strip():
        del fields["name"]
        first, last = _split_name(whole)
        differing = [
            part
            for part, value in (("first_name", first), ("last_name", last))
            if value is not None and fields.setdefault(part, value) != value
        ]
        if differing:
            lost(source.get("name", "name"), " and ".join(source[part] for part in differing))
    if "company_size" in fields:
        fields["company_size"], note = company_size(fields["company_size"])
        if note:
            warnings.append(("company_size", note))
    return Contact(fields=fields, unmapped=tuple(unmapped), warnings=tuple(warnings))
