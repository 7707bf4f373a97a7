"""What every command shares: the settings the root command built, errors, parameter types."""

from __future__ import annotations

import math
import sys
from typing import Any, NoReturn

import click

from leadflow.streams.settings import Settings


class FiniteFloatRange(click.FloatRange):
    """A ``FloatRange`` that also refuses ``nan`` and ``inf``.

    ``nan`` compares false with every bound, so click's own range lets it through.

    Example:
        >>> FiniteFloatRange(min=0, min_open=True).convert("2.5", None, None)
        2.5
        >>> FiniteFloatRange(min=0).convert("nan", None, None)
        Traceback (most recent call last):
        ...
        click.exceptions.BadParameter: 'nan' is not a finite number.
    """

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value`` and check it is finite, then apply the range."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def workspace_param(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a workspace id that is safe everywhere it goes (keys, DDL, views).

    Example:
        >>> workspace_param(None, None, "acme-eu")  # type: ignore[arg-type]
        'acme-eu'
    """
    from leadflow.sinks.workspaces import WorkspaceError, check_workspace

    if value is None:
        return None
    try:
        return check_workspace(value)
    except WorkspaceError as exc:
        raise click.BadParameter(str(exc)) from None


def fail(message: str) -> NoReturn:
    """Print a clear error and exit 1 (no traceback for expected failures)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def settings_of(ctx: click.Context) -> Settings:
    """The settings the root command built (the only place that reads the environment)."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise click.UsageError("settings were not loaded")
    return settings
