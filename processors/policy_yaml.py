"""Reading a policy file: YAML nodes that keep their line, so every error can point at it.

Marketing and sales ops edit the policy by hand; a typo must fail the worker at start with a
message that names the file, the line and the field (``policy.yaml:17
scoring.engagement[3].points: must be a number``). That is why this walks PyYAML's composed
node tree, which keeps marks, instead of ``safe_load``'s plain dicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

import yaml

from leadflow.processors.errors import PolicyError
from leadflow.processors.events import Kind


class Node:
    """A YAML node plus its dotted path, so every error can say where it is."""

    __slots__ = ("node", "path", "source")

    def __init__(self, node: yaml.Node, path: str, source: str) -> None:
        self.node = node
        self.path = path
        self.source = source

    def fail(self, message: str) -> PolicyError:
        """The error to raise: ``source:line path: message``."""
        line = self.node.start_mark.line + 1
        return PolicyError(f"{self.source}:{line} {self.path or '<root>'}: {message}")

    @classmethod
    def document(cls, text: str, source: str) -> Node | None:
        r"""The root of a YAML document with its marks (``None`` for an empty document).

        Example:
            >>> Node.document("version: 1\n", "p.yaml").mapping()["version"].integer()
            1
            >>> Node.document("a: [1\n", "p.yaml")
            Traceback (most recent call last):
            ...
            leadflow.processors.errors.PolicyError: p.yaml:2 <root>: not valid YAML (...)

        Raises:
            PolicyError: ``source:line <root>: not valid YAML (...)``.
        """
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            raise PolicyError(f"{source}:{line} <root>: not valid YAML ({exc})") from None
        return None if root is None else cls(root, "", source)

    def _child(self, node: yaml.Node, key: str) -> Node:
        path = f"{self.path}.{key}" if self.path else key
        return Node(node, path, self.source)

    def mapping(self, allowed: frozenset[str] | None = None) -> dict[str, Node]:
        """The node's keys and child nodes; any key outside ``allowed`` is an error."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.fail("must be a mapping")
        out: dict[str, Node] = {}
        for key_node, value_node in self.node.value:
            key = str(key_node.value)
            child = self._child(value_node, key)
            if allowed is not None and key not in allowed:
                raise Node(key_node, child.path, self.source).fail(
                    f"unknown field (allowed: {', '.join(sorted(allowed))})"
                )
            if key in out:
                raise Node(key_node, child.path, self.source).fail("duplicate field")
            out[key] = child
        return out

    def seq(self) -> list[Node]:
        """The node's items (it must be a list)."""
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.fail("must be a list")
        return [Node(n, f"{self.path}[{i}]", self.source) for i, n in enumerate(self.node.value)]

    def _scalar(self) -> tuple[str, str]:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("must be a single value")
        return self.node.tag.rsplit(":", 1)[-1], str(self.node.value)

    def text(self) -> str:
        """The node as a string (it must be a scalar)."""
        tag, value = self._scalar()
        if tag == "null" or value == "":
            raise self.fail("must be a non-empty string")
        return value

    def num(self) -> float:
        """The node as a finite number."""
        tag, value = self._scalar()
        if tag not in {"int", "float"}:
            raise self.fail("must be a number")
        number = float(yaml.safe_load(value))
        if not math.isfinite(number):
            # .nan passes every "> 0" check and then turns each decayed score into NaN.
            raise self.fail("must be a finite number")
        return number

    def integer(self) -> int:
        """The node as an integer."""
        tag, value = self._scalar()
        if tag != "int":
            raise self.fail("must be an integer")
        return int(value)

    def flag(self) -> bool:
        """The node as a boolean."""
        tag, value = self._scalar()
        if tag != "bool":
            raise self.fail("must be true or false")
        return value.lower() in {"true", "yes", "on"}

    def strs(self) -> tuple[str, ...]:
        """The node as a list of strings."""
        return tuple(n.text() for n in self.seq())

    def kind(self) -> Kind:
        """The node as an event kind name."""
        value = self.text()
        try:
            return Kind(value)
        except ValueError:
            raise self.fail(f"unknown event kind {value!r}") from None


T = TypeVar("T")


def required(m: Mapping[str, Node], key: str, parent: Node) -> Node:
    """``m[key]``, or an error at ``parent`` naming the missing field."""
    if key not in m:
        raise parent.fail(f"missing required field {key!r}")
    return m[key]


def optional(m: Mapping[str, Node], key: str, read: Callable[[Node], T], default: T) -> T:
    """``read(m[key])``, or ``default`` when the field is absent."""
    return read(m[key]) if key in m else default


def positive(n: Node, value: float) -> float:
    """``value`` if it is above zero, else an error at ``n``."""
    if value <= 0:
        raise n.fail("must be greater than 0")
    return value
