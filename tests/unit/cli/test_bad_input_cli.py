"""Bad input at two entry points: CLI arguments and the policy file.

Each case runs the real console entry point (``leadflow.cli.main.main``, which turns
domain errors into one ``error:`` line) and asserts the clear message, the exit code (2 for
a usage error, 1 for a request that cannot be done), no traceback, and that nothing changed:
the data dir is byte-for-byte as before and nothing connected to ClickHouse or Kafka
(the bootstrap is a closed port, and every ClickHouse client factory fails the test).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadflow.cli import projector as projector_cli
from leadflow.cli import replay as replay_cli
from leadflow.cli import report as report_cli
from leadflow.cli import workspace as workspace_cli
from leadflow.cli.main import main
from leadflow.processors.errors import PolicyError
from leadflow.processors.policy_load import parse_policy
from leadflow.streams.collector.keys import KeyStore

DEFAULT = (Path(__file__).parents[3] / "infra" / "policy" / "default.yaml").read_text()
VALID_ISH = "must match"  # the workspace-id rule's wording

# (arguments, exit code, text the one error line must contain)
CLI_CORPUS: list[tuple[list[str], int, str]] = [
    (["nonsense"], 2, "No such command 'nonsense'"),
    (["projector", "--database", "bad name"], 2, "'bad name' is not a plain identifier"),
    (["projector", "--batch-size", "0"], 2, "0 is not in the range 1<=x<=100000"),
    (["projector", "--max-seconds", "-5", "--until-idle"], 2, "-5.0 is not in the range"),
    (["projector", "--max-seconds", "nan", "--until-idle"], 2, "'nan' is not a finite number"),
    (["replay", "--database", "a-b"], 2, "'a-b' is not a plain identifier"),
    (["replay", "--max-seconds", "0"], 2, "0.0 is not in the range 0<x"),
    (["replay", "rekey", "--from", "a b", "--to", "x"], 2, "'a b' is not a Kafka topic name"),
    (["replay", "rekey", "--from", "x", "--to", ".."], 2, "'..' is not a Kafka topic name"),
    (["replay", "rekey", "--from", "x"], 2, "Missing option '--to'"),
    (["replay", "rekey", "--from", "x", "--to", "y", "--batch", "0"], 2, "0 is not in the range"),
    (["replay", "rekey", "--from", "x", "--to", "x"], 1, "the same topic"),
    (["sql", "SELECT 1", "--database", "x;drop table y"], 2, "is not a plain identifier"),
    (["sql"], 2, "Missing argument 'QUERY'"),
    (["report", "attribution", "--order", "5"], 2, "5 is not in the range"),
    (["report", "attribution", "--learn-from", "soon"], 2, "does not match"),
    (["report", "funnel", "--from", "2026-03-01", "--to", "2026-01-01"], 2, "must be after"),
    (["report", "funnel", "--from", "yesterday", "--to", "2026-01-01"], 2, "does not match"),
    (["report", "funnel", "--from", "2026-01-01", "--to", "2026-02-01", "--database", "1db"],
     2, "'1db' is not a plain identifier"),
    (["report", "funnel", "--from", "2026-01-01", "--to", "2026-02-01", "--workspace",
      "x' OR '1'='1"], 2, VALID_ISH),
    (["report", "funnel", "--format", "xml"], 2, "'xml' is not one of"),
    (["report", "attribution", "--model", "magic"], 2, "'magic' is not one of"),
    (["report", "attribution", "--conversion", "vibes"], 2, "'vibes' is not one of"),
    (["report", "attribution", "--lookback-days", "-1"], 2, "-1 is not in the range"),
    (["report", "attribution", "--half-life-days", "0"], 2, "0.0 is not in the range"),
    (["report", "velocity", "--by", "zodiac"], 2, "'zodiac' is not one of"),
    (["site", "--port", "99999", "--write-key", "k"], 2, "99999 is not in the range"),
    (["site"], 2, "Missing option '--write-key'"),
    (["demo", "--people", "-3"], 2, "-3 is not in the range x>=1"),
    (["demo", "--days", "nan"], 2, "'nan' is not a finite number"),
    (["topics", "create", "--partitions", "0"], 2, "0 is not in the range"),
    (["topics", "create", "--replication", "99"], 2, "99 is not in the range"),
    (["collector", "--port", "0"], 2, "0 is not in the range"),
    (["collector", "--workers", "0"], 2, "0 is not in the range"),
    (["keys", "create", ""], 2, VALID_ISH),
    (["keys", "create", "two words"], 2, VALID_ISH),
    (["keys", "create", "wsA\n"], 2, VALID_ISH),  # issue 19: the id is checked whole
    (["keys", "rotate", "nobody"], 1, "workspace 'nobody' has no write keys to rotate"),
    (["keys", "revoke", "nope"], 1, "no active key with id 'nope'"),
    (["simulate", "--start", "notadate", "--dry-run"], 2, "not an ISO-8601 time"),
    (["simulate", "--rate", "-1", "--dry-run"], 2, "-1.0 is not in the range x>0"),
    (["simulate", "--via", "pigeon"], 2, "'pigeon' is not one of"),
    (["worker", "--loglevel", "info"], 2, "No such option: --loglevel"),
    (["workspace", "views", "bad id"], 2, VALID_ISH),
    (["workspace", "views", "wsA\n"], 2, VALID_ISH),
    (["report", "kpis", "--from", "2026-01-01", "--to", "2026-02-01", "--workspace", "wsA\n"],
     2, VALID_ISH),
    (["workspace", "views", "acme", "--database", "a.b"], 2, "'a.b' is not a plain identifier"),
    (["workspace", "policy", "acme", "--grantee", "x;y"], 2, "'x;y' is not a plain identifier"),
    (["workspace", "policy", "acme"], 2, "Missing option '--grantee'"),
]  # fmt: skip


def _no_clickhouse(_settings: object) -> object:
    raise AssertionError("a bad argument must be refused before ClickHouse is opened")


@pytest.fixture
def entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    """Run ``leadflow <args>`` through ``main``; return (exit code, stdout + stderr)."""
    data = tmp_path / "data"
    data.mkdir()
    keys = KeyStore(data / "keys.json")
    keys.create("acme", lambda: datetime(2026, 1, 1, tzinfo=UTC))
    for name, value in {
        "LEADFLOW_DATA_DIR": str(data),
        "LEADFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "LEADFLOW_COLLECTOR_KEYS_FILE": str(data / "keys.json"),
        "LEADFLOW_LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)
    for module in (report_cli, projector_cli, replay_cli, workspace_cli):
        monkeypatch.setattr(module, "clickhouse_client", _no_clickhouse)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    def run(args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["leadflow", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out + out.err

    yield run
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before, "a refused command changed the data dir"


@pytest.mark.parametrize(
    ("args", "code", "message"), CLI_CORPUS, ids=[" ".join(c[0]) or "-" for c in CLI_CORPUS]
)
def test_bad_cli_arguments_are_one_clear_error(
    entry: object, args: list[str], code: int, message: str
) -> None:
    exit_code, output = entry(args)  # type: ignore[operator]
    assert exit_code == code, output
    assert message in output, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, output


# -- the policy file ---------------------------------------------------------------------

# (what changes in default.yaml, the needle on the reported line, field and message)
POLICY_CORPUS: dict[str, tuple[str, str, str, str]] = {
    "bad yaml: unclosed flow mapping": (
        "caps: {fit: 100, engagement: 100}", "caps: {fit: 100, engagement: 100\n",
        "half_life_days", "<root>: not valid YAML",
    ),
    "bad yaml: tab indentation": (
        "  half_life_days: 14", "\thalf_life_days: 14", "\thalf_life_days",
        "<root>: not valid YAML",
    ),
    "unknown top-level field": (
        "sla_hours: 24", "sla_hourz: 24", "sla_hourz", "sla_hourz: unknown field",
    ),
    "unknown field in a rule": (
        "{name: page_view, kind: visit, points: 1, cap: 10}",
        "{name: page_view, kind: visit, pointz: 1, cap: 10}", "pointz",
        "scoring.engagement[0].pointz: unknown field (allowed: cap, custom_name",
    ),
    "wrong type: text for points": (
        "points: 10, cap: 30", "points: ten, cap: 30", "points: ten",
        "scoring.engagement[1].points: must be a number",
    ),
    "wrong type: list for a mapping": (
        "caps: {fit: 100, engagement: 100}", "caps: [100, 100]", "caps: [100",
        "scoring.caps: must be a mapping",
    ),
    "wrong type: float for an integer": (
        "top_rules: 5", "top_rules: 2.5", "top_rules: 2.5", "scoring.top_rules: must be an integer",
    ),
    "wrong type: text for a flag": (
        "decays: false}", "decays: nope}", "decays: nope", "decays: must be true or false",
    ),
    "negative half-life": (
        "half_life_days: 14", "half_life_days: -3", "half_life_days: -3",
        "scoring.half_life_days: must be greater than 0",
    ),
    "nan half-life": (
        "half_life_days: 14", "half_life_days: .nan", "half_life_days: .nan",
        "scoring.half_life_days: must be a finite number",
    ),
    "negative SLA": (
        "sla_hours: 24", "sla_hours: -1", "sla_hours: -1", "sla_hours: must be greater than 0",
    ),
    "negative cap": (
        "points: 1, cap: 10}", "points: 1, cap: -10}", "cap: -10",
        "scoring.engagement[0].cap: must be greater than 0",
    ),
    "empty range (min above max)": (
        "match: {min: 200, max: 1999}", "match: {min: 2000, max: 1999}", "max: 1999",
        "scoring.fit[3].match.max: must not be below min (2000)",
    ),
    "unknown event kind": (
        "kind: demo_requested, points: 40", "kind: demo_request, points: 40", "demo_request,",
        "scoring.engagement[11].kind: unknown event kind 'demo_request'",
    ),
    "unknown domain list": (
        "match: {domain_list: free_mail}", "match: {domain_list: free_mails}", "free_mails",
        "scoring.fit[8].match.domain_list: no list 'free_mails' under domains",
    ),
    "duplicate field": (
        "sla_hours: 24", "sla_hours: 24\nsla_hours: 48", "sla_hours: 48",
        "sla_hours: duplicate field",
    ),
    "unsupported version": (
        "version: 1", "version: 2", "version: 2", "version: only version 1 is supported",
    ),
    "python object tag": (
        "sla_hours: 24", "sla_hours: !!python/object/apply:os.system ['true']", "sla_hours: !!",
        "sla_hours: must be a single value",
    ),
}  # fmt: skip


def _policy_text(case: str) -> str:
    old, new, _needle, _message = POLICY_CORPUS[case]
    assert old in DEFAULT, case
    return DEFAULT.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("case", sorted(POLICY_CORPUS))
def test_bad_policy_names_file_line_and_field(case: str) -> None:
    text = _policy_text(case)
    _old, _new, needle, message = POLICY_CORPUS[case]
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    error = str(info.value)
    if "<root>: not valid YAML" in message:
        # YAML's own error: the parser reports where it noticed, at or after the mistake.
        line = int(error.split(":", 2)[1].split()[0])
        assert line >= _line_of(text, needle) - 2, error
    else:
        assert error.startswith(f"policy.yaml:{_line_of(text, needle)} "), error
    assert message in error, error


@pytest.mark.parametrize("case", ["negative half-life", "bad yaml: tab indentation", "missing"])
def test_worker_refuses_a_bad_policy_file_before_starting(
    entry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path = tmp_path / "policy.yaml"
    if case != "missing":
        path.write_text(_policy_text(case))
    monkeypatch.setenv("LEADFLOW_POLICY_FILE", str(path))
    exit_code, output = entry(["worker"])  # type: ignore[operator]
    assert exit_code == 1, output
    expected = (
        f"cannot read LEADFLOW_POLICY_FILE {path}" if case == "missing" else f"error: {path}:"
    )
    assert expected in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "worker").exists()  # no state opened, nothing started
