"""A stand-in for a module's structlog logger, for tests that check what was logged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    """Stands in for a module's structlog logger: keeps (level, event, fields).

    ``monkeypatch.setattr(module, "log", recorded)`` where the module calls ``log.<level>``.
    """

    lines: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _keep(self, level: str) -> Callable[..., None]:
        return lambda event, **fields: self.lines.append((level, event, fields))

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._keep(level)

    def events(self, level: str) -> list[tuple[str, dict[str, Any]]]:
        """``(event, fields)`` of the lines logged at ``level``, in order."""
        return [(event, fields) for lvl, event, fields in self.lines if lvl == level]
