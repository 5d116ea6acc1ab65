"""How long must a sizing sweep step be? Knees and costs per step length, side by side, one run.

Notebook 05 sweeps each layout to its knee with short open-loop steps (seconds) to fit its time
budget. A shorter step has fewer requests behind each percentile (``requests`` = n) and a
window closer to the engine's fill-up, so its knee can move. This script sweeps the same
layouts with several step lengths in one run and prints, per step length, each layout's knee
(highest rate meeting the SLO), its cost per million output tokens, the n behind it, whether
the *ranking* of layouts by cost at the knee changes with the step length (what matters for the
recommendation) and the layout :func:`labutils.sizing.recommend` picks. Simulated engines on
127.0.0.1; every step is bounded.

    python benchmarks/sizing_step_length.py [--model llama-3.1-8b] [--durations 1.5,2.5,5]
        [--layouts "g6e.xlarge TP1 PP1;p4d.24xlarge TP2 PP1"] [--tpot-p50-ms 50]
"""

from __future__ import annotations

import argparse

import pandas as pd

from labutils import sizing
from labutils.errors import LabError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--durations", default="1.5,2.5,5")
    parser.add_argument("--load-fractions", default="0.5,0.75,1,1.25")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--tpot-p50-ms", type=float, default=50.0)
    parser.add_argument("--ttft-p95-ms", type=float, default=500.0)
    parser.add_argument("--layouts", default="g6e.xlarge TP1 PP1;p4d.24xlarge TP2 PP1")
    args = parser.parse_args()
    slo = sizing.LatencySlo(args.tpot_p50_ms, args.ttft_p95_ms)
    frame = sizing.candidates(
        args.model, slo=slo, input_tokens=args.input_tokens, output_tokens=args.output_tokens
    )
    wanted = [name.strip() for name in args.layouts.split(";") if name.strip()]
    layouts = frame[frame["layout"].isin(wanted)].reset_index(drop=True)
    layouts.attrs.update(frame.attrs)
    fractions = tuple(float(f) for f in args.load_fractions.split(","))
    knees = []
    picks: list[tuple[float, str]] = []
    for duration_s in (float(d) for d in args.durations.split(",")):
        settings = sizing.SweepSettings(
            load_fractions=fractions,
            duration_s=duration_s,
            warmup_s=min(0.5, duration_s / 4),
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
        )
        measured = sizing.sweep(layouts, settings, slo=slo, progress=False)
        knee = sizing.knee_points(measured, slo)
        knee["step_s"] = duration_s
        knees.append(knee)
        try:
            picks.append((duration_s, sizing.recommend(measured, slo).layout))
        except LabError as exc:
            picks.append((duration_s, f"none ({exc})"))
    table = pd.concat(knees, ignore_index=True)
    table["rank"] = table.groupby("step_s")["usd_per_mtok"].rank().astype(int)
    cols = ["step_s", "layout", "meets_slo", "load_fraction", "rate_rps", "requests",
            "tpot_p50_ms", "ttft_p95_ms", "usd_per_mtok", "late_steps", "rank"]  # fmt: skip
    print(f"simulated engines, {layouts.attrs['model']}, knee = highest rate meeting {slo}")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ranks = table.pivot(index="layout", columns="step_s", values="rank")
    stable = bool((ranks.nunique(axis=1) == 1).all())
    print(f"ranking by USD/Mtok at the knee identical across step lengths: {stable}")
    for duration_s, layout in picks:
        print(f"recommend() with {duration_s:g} s steps: {layout}")
    print(f"recommendation identical across step lengths: {len({p for _, p in picks}) == 1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
