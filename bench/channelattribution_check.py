"""Cross-check leadflow's attribution against ChannelAttribution itself (by hand, not in CI).

    .venv/bin/pip install ChannelAttribution matplotlib   # 2.2.5 builds from source (~1 min);
                                                          # it imports matplotlib at import
    python -m bench.channelattribution_check Data.csv [--nsim 1e7] [--conv-par 0.01]

``Data.csv`` is ChannelAttribution's sample (``path;total_conversions;total_conversion_value;
total_null``, 10,000 paths): it ships in the package's source repository
(``python/src/cypack/data/Data.csv`` of DavideAltomare/ChannelAttribution) and is not copied
here (GPL-3). Any file of that format works.

The paths are loaded into a throwaway chdb as people (``sinks.bench_data.load_path_records``:
one person per journey, a won deal per conversion worth the path's value per conversion),
the path tables are built, and leadflow's reports (first, last, linear, markov orders 1-4,
shapley) run as ``leadflow report attribution`` runs them. ChannelAttribution's
``heuristic_models`` and ``markov_model`` run on the same file when the package imports;
its Markov figures are simulations (``--nsim`` journeys, repeated until the spread is under
``--conv-par``), so they agree with leadflow's exact ones up to simulation noise.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from leadflow.sinks.bench_data import PathRecord, load_path_records
from leadflow.sinks.migrations import migrate
from leadflow.sinks.reports import attribution

DB = "leadflow"
WORKSPACE = "ca"
START_MS = 1_767_225_600_000  # 2026-01-01 UTC
MODELS = (
    ("first_touch", 1), ("last_touch", 1), ("linear", 1), ("markov", 1), ("markov", 2),
    ("markov", 3), ("markov", 4), ("shapley", 1),
)  # fmt: skip


def read_paths(path: Path) -> list[PathRecord]:
    """ChannelAttribution's CSV as path records (each conversion worth the path's mean)."""
    out = []
    with path.open() as f:
        for row in csv.DictReader(f, delimiter=";"):
            channels = tuple(c.strip() for c in row["path"].split(">") if c.strip())
            conversions = int(float(row["total_conversions"]))
            value = float(row.get("total_conversion_value") or 0.0)
            each = value / conversions if conversions else 0.0
            out.append(
                (channels, conversions, int(float(row["total_null"])), (each,) * conversions)
            )
    return out


def leadflow_credit(records: list[PathRecord]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{model label: {channel: (conversions, value)}}`` from leadflow's reports."""
    from clickhouse_connect import get_client

    with tempfile.TemporaryDirectory(prefix="leadflow-ca-") as tmp:
        client = get_client(dsn=f"chdb://{Path(tmp) / 'clickhouse'}")
        migrate(client, DB)
        started = time.perf_counter()
        loaded = load_path_records(client, DB, records, WORKSPACE, START_MS)
        print(f"loaded {loaded} in {time.perf_counter() - started:.0f} s", flush=True)
        out = {}
        for model, order in MODELS:
            started = time.perf_counter()
            report = attribution(
                client, DB, model=model, order=order, conversion="won", workspace=WORKSPACE,
                date_from=date(2026, 1, 1), date_to=date(2027, 1, 1),
            )  # fmt: skip
            label = f"{model} {order}" if model == "markov" else model
            print(f"leadflow {label}: {time.perf_counter() - started:.2f} s", flush=True)
            out[label] = {str(k): (float(c), float(v)) for k, c, v in report.rows}
        client.close()
    return out


def channelattribution_credit(
    csv_path: Path, nsim: float, conv_par: float
) -> dict[str, dict[str, tuple[float, float]]] | None:
    """The same figures from ChannelAttribution, or ``None`` when it is not installed."""
    try:
        import ChannelAttribution as ca  # type: ignore[import-not-found]
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"ChannelAttribution not importable ({exc}); leadflow's figures only")
        return None
    data = pd.read_csv(csv_path, sep=";")
    out: dict[str, dict[str, tuple[float, float]]] = {}
    heuristic = ca.heuristic_models(
        data, "path", "total_conversions", var_value="total_conversion_value", flg_pro=False
    )
    for model in ("first_touch", "last_touch", "linear_touch"):
        label = "linear" if model == "linear_touch" else model
        out[label] = {
            str(c): (float(a), float(b))
            for c, a, b in zip(
                heuristic["channel_name"], heuristic[f"{model}_conversions"],
                heuristic[f"{model}_value"], strict=True,
            )
        }  # fmt: skip
    for order in (1, 2, 3, 4):
        started = time.perf_counter()
        result: Any = ca.markov_model(
            data, "path", "total_conversions", var_value="total_conversion_value",
            var_null="total_null", order=order, nsim_start=nsim, conv_par=conv_par,
            verbose=False, flg_pro=False,
        )  # fmt: skip
        print(f"ChannelAttribution markov {order}: {time.perf_counter() - started:.1f} s")
        frame = result["result"] if isinstance(result, dict) else result
        out[f"markov {order}"] = {
            str(c): (float(a), float(b))
            for c, a, b in zip(
                frame["channel_name"], frame["total_conversions"],
                frame["total_conversion_value"], strict=True,
            )
        }  # fmt: skip
    return out


def main() -> None:
    """Run both and print every model's credit side by side."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("csv", type=Path)
    p.add_argument("--nsim", type=float, default=1e7, help="ChannelAttribution's nsim_start")
    p.add_argument("--conv-par", type=float, default=0.01, help="its convergence parameter")
    args = p.parse_args()
    records = read_paths(args.csv)
    ours = leadflow_credit(records)
    theirs = channelattribution_credit(args.csv, args.nsim, args.conv_par) or {}
    for label, credit in ours.items():
        reference = theirs.get(label, {})
        print(f"\n{label}: channel, leadflow conversions, ChannelAttribution, rel. diff; value ...")
        worst = 0.0
        for channel, (conv, value) in sorted(credit.items(), key=lambda x: -x[1][0]):
            ref = reference.get(channel)
            if ref is None:
                print(f"  {channel:12s} {conv:11.2f} {value:12.2f}")
                continue
            d_conv = (conv - ref[0]) / ref[0] if ref[0] else 0.0
            d_value = (value - ref[1]) / ref[1] if ref[1] else 0.0
            worst = max(worst, abs(d_conv))
            print(
                f"  {channel:12s} {conv:11.2f} {ref[0]:11.2f} {d_conv:+8.2%}"
                f"   {value:12.2f} {ref[1]:12.2f} {d_value:+8.2%}"
            )
        if reference:
            print(f"  largest conversion difference: {worst:.2%}")


if __name__ == "__main__":
    main()
