"""How long must a sizing sweep step be? Measured / roofline ratios side by side, one run.

The notebook's sweep keeps each closed-loop step short (seconds) to fit its time budget. A short
step includes the ramp-up (all users' prefills at once) and the drain, so the measured output
tokens/s fall below the steady-state roofline and the USD per Mtok rise. This script measures
the same layouts at the same concurrency with several step lengths in one run and prints
measured/roofline throughput and TPOT, and the resulting USD per Mtok, side by side, plus
whether the *ranking* of layouts by USD per Mtok changes with the step length (what matters for
the recommendation), and the layout :func:`labutils.sizing.recommend` picks at each length.
Simulated engines on 127.0.0.1; every step is bounded.

    python benchmarks/sizing_step_length.py [--model llama-3.1-8b] [--concurrency 32]
        [--durations 1.5,4,8] [--layouts "g6e.xlarge TP1 PP1;p4d.24xlarge TP1 PP1"]
"""

from __future__ import annotations

import argparse

import pandas as pd

from labutils import sizing
from labutils.errors import LabError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--durations", default="1.5,4,8")
    parser.add_argument("--input-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument(
        "--layouts", default="g6e.xlarge TP1 PP1;g6.xlarge TP1 PP1;p4d.24xlarge TP1 PP1"
    )
    args = parser.parse_args()
    frame = sizing.candidates(args.model)
    wanted = [name.strip() for name in args.layouts.split(";") if name.strip()]
    layouts = frame[frame["layout"].isin(wanted)].reset_index(drop=True)
    layouts.attrs.update(frame.attrs)
    runs = []
    picks: list[tuple[float, str]] = []
    for duration_s in (float(d) for d in args.durations.split(",")):
        settings = sizing.SweepSettings(
            concurrencies=(args.concurrency,),
            duration_s=duration_s,
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
        )
        measured = sizing.sweep(layouts, settings, progress=False)
        measured["step_s"] = duration_s
        runs.append(measured)
        try:
            picks.append((duration_s, sizing.recommend(measured).layout))
        except LabError as exc:
            picks.append((duration_s, f"none ({exc})"))
    table = pd.concat(runs, ignore_index=True)
    table["tput_ratio"] = table["measured_over_roofline"]
    table["tpot_ratio"] = table["tpot_p50_ms"] / table["roofline_tpot_ms"]
    table["rank"] = table.groupby("step_s")["usd_per_mtok"].rank().astype(int)
    cols = ["step_s", "layout", "completed", "tput_ratio", "tpot_ratio", "usd_per_mtok",
            "roofline_usd_per_mtok", "rank"]  # fmt: skip
    print(f"simulated engines, {layouts.attrs['model']}, concurrency {args.concurrency}")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ranks = table.pivot(index="layout", columns="step_s", values="rank")
    stable = bool((ranks.nunique(axis=1) == 1).all())
    print(f"ranking by USD/Mtok identical across step lengths: {stable}")
    for duration_s, layout in picks:
        print(f"recommend() with {duration_s:g} s steps (default SLO): {layout}")
    print(f"recommendation identical across step lengths: {len({p for _, p in picks}) == 1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
