"""``leadflow projector`` asks its supervisor for a fresh process when the stall watch gives up."""

from __future__ import annotations

import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from leadflow.cli import projector as projector_cli
from leadflow.cli.main import main
from leadflow.sinks.projector import ProjectorStalled, ProjectorStats
from leadflow.streams.stall import EXIT_STALLED


class ClosingClient:
    closed = False

    def close(self) -> None:
        self.closed = True


class StallingProjector:
    """Stands in for the projector whose new consumer did not move a partition either."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def run(self, stop: threading.Event) -> Any:
        raise ProjectorStalled("leadflow.events:3 stays 12 records behind its end")


def test_a_stall_the_watch_cannot_cure_exits_70_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LEADFLOW_LOG_FORMAT", "json")
    client = ClosingClient()
    monkeypatch.setattr(projector_cli, "clickhouse_client", lambda _settings: client)
    monkeypatch.setattr(projector_cli, "serve", lambda *_args: nullcontext(None))
    monkeypatch.setattr(projector_cli, "Projector", StallingProjector)
    monkeypatch.setattr(sys, "argv", ["leadflow", "projector"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == EXIT_STALLED == 70
    err = capsys.readouterr().err
    assert "Error: stalled: leadflow.events:3 stays 12 records behind its end" in err
    assert "Traceback" not in err
    assert client.closed


class RebuiltProjector(StallingProjector):
    """Stands in for a projector whose watch replaced its consumer twice, then was stopped."""

    def run(self, stop: threading.Event) -> Any:
        return ProjectorStats(records=5, rows=7, stall_rebuilds=2)


def test_the_summary_names_the_consumers_replaced_after_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(projector_cli, "clickhouse_client", lambda _settings: ClosingClient())
    monkeypatch.setattr(projector_cli, "serve", lambda *_args: nullcontext(None))
    monkeypatch.setattr(projector_cli, "Projector", RebuiltProjector)
    monkeypatch.setattr(sys, "argv", ["leadflow", "projector"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code in (0, None)
    out = capsys.readouterr().out
    assert "projected 5 records into 7 rows" in out
    assert "2 new consumers after a stall" in out
