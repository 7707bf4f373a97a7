"""docs/events.md is generated from the schemas and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from leadflow.schemas.catalog import load_catalog
from leadflow.schemas.docs import render

DOCS = Path(__file__).resolve().parents[3] / "docs" / "events.md"


def test_docs_events_md_is_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == render(), (
        "docs/events.md is stale: run `.venv/bin/python -m leadflow.schemas.docs > docs/events.md`"
    )


def test_every_record_and_field_is_documented_on_the_page() -> None:
    page = render()
    for fullname, versions in load_catalog().versions.items():
        assert f"`{fullname}`" in page
        for name in versions[-1].field_names:
            assert f"| `{name}` |" in page


def test_module_entry_point_writes_the_page_to_stdout() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leadflow.schemas.docs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out == render()
