"""Every command's --help keeps its examples one per line (click's "\\b" paragraphs)."""

import click
from click.testing import CliRunner

from leadflow.cli.main import cli


def _commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        out.append((path, command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, path))
    return out


def test_examples_in_help_stay_one_per_line() -> None:
    runner = CliRunner()
    with_examples = 0
    for path, command in [((), cli), *_commands(cli)]:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "\\b" not in result.output, path
        written = [
            line.strip()
            for line in (command.help or "").splitlines()
            if line.strip().startswith("leadflow ")
        ]
        if not written:
            continue
        with_examples += 1
        shown = {line.strip() for line in result.output.splitlines()}
        # Rewrapped, the examples ran together and a comment was cut from its command.
        assert [line for line in written if line not in shown] == [], path
    assert with_examples >= 7
