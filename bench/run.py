"""``make bench``: every bench module in turn, each in its own process, then one table.

Each module runs as ``python -m bench.<name> --json <file>`` (own process: chdb allows one
data directory per process, and nothing measured shares an interpreter with another
measurement). The rows are gathered from the JSON lines and printed as the Markdown table
docs/benchmarks.md shows; the raw rows and the table are kept under ``--out``.

    python -m bench.run [--quick] [--only processors,stages,analytics,pipeline,cluster] [--out DIR]
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import parser

MODULES = ("processors", "stages", "analytics", "pipeline", "cluster")


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (row, figure, value, baseline, ratio, target)."""
    lines = [
        "| row | figure | value | baseline | ratio | target | met | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        base = f"{r['baseline']:.4g} ({r['baseline_name']})" if r["baseline"] is not None else ""
        ratio = f"{r['ratio']:.3g}" if r["ratio"] is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        lines.append(
            f"| {r['row']} | {r['name']} | {r['value']:.4g} {r['unit']} | {base} | {ratio} | "
            f"{r['target']} | {met} | `{r['command']}` |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the selected modules and print the table."""
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--only", default=",".join(MODULES))
    p.add_argument("--out", type=Path, default=Path(".leadflow/bench"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = args.out / f"results-{stamp}.jsonl"
    failed = []
    for name in args.only.split(","):
        started = time.monotonic()
        command = [sys.executable, "-m", f"bench.{name}", "--json", str(results)]
        if args.quick:
            command.append("--quick")
        print(f"== bench.{name} {'(quick)' if args.quick else ''}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
        print(f"== bench.{name} took {time.monotonic() - started:.0f} s", flush=True)
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    text = (
        f"leadflow bench {stamp}{' (quick)' if args.quick else ''} on {platform.node()}, "
        f"{platform.python_version()}\n\n{table(rows)}\n"
    )
    (args.out / f"results-{stamp}.md").write_text(text)
    print(text)
    print(f"rows: {results}")
    if failed:
        sys.exit(f"bench modules failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
