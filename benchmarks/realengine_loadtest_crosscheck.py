"""Peer cross-check of ``labctl loadtest``: ``vllm bench serve`` vs our sender, same real server.

Starts one real vLLM (CPU build, tiny model), then runs both load testers against it at the
same Poisson rate with the same request count and exact prompt/output lengths, in the order
A B B A (so a machine that gets busier or quieter during the run biases neither tool), and
prints each tool's request throughput and TTFT/TPOT medians with the ratio ours / vLLM's.
Target (issue 9): every ratio within 10 % of 1.

On a small shared machine the server's own speed drifts between runs (and a client's CPU use
slows a server on the same cores), so it also prints each run's server-side view from the
engine's ``/metrics`` (mean TTFT and TPOT from vLLM's histograms over the run) and the ratios of
client median to server mean: those compare the *measurements* with the machine's drift removed.

    python benchmarks/realengine_loadtest_crosscheck.py [--rate 8] [--requests 160]

Needs the vLLM venv (``make real-engine``) and ``labutils.loadtest``. Exits 0 when every ratio
is within the tolerance, 1 otherwise, 2 when something is missing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

# Use this checkout's labutils even when another copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families

from labutils.errors import LabError
from labutils.realengine import build_tiny_model, check_environment, start_engine
from labutils.realengine.bench import run_vllm_bench

_METRICS = ("request_throughput", "median_ttft_ms", "median_tpot_ms")
# Server-side histograms whose mean over a run is its view of the same quantity.
_SERVER = {
    "median_ttft_ms": "vllm:time_to_first_token_seconds",
    "median_tpot_ms": "vllm:request_time_per_output_token_seconds",
}


def _histogram_totals(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _server_means_ms(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    means = {}
    for metric, family in _SERVER.items():
        count = after[f"{family}_count"] - before[f"{family}_count"]
        total = after[f"{family}_sum"] - before[f"{family}_sum"]
        means[metric] = 1000 * total / count if count else float("nan")
    return means


def _ours(url: str, model: str, args: argparse.Namespace, seed: int) -> dict[str, float]:
    from labutils.loadtest import open_loop, run_load, summarize

    schedule = open_loop(
        args.rate,
        requests=args.requests,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        seed=seed,
    )
    result = run_load(schedule, url, model, progress=False)
    data: dict[str, Any] = summarize(result).to_json()
    return {name: float(data[name]) for name in _METRICS}


def _theirs(url: str, model: str, tokenizer: Path, args: argparse.Namespace, seed: int,
            env: Any) -> dict[str, float]:  # fmt: skip
    result = run_vllm_bench(
        url,
        model,
        tokenizer,
        request_rate=args.rate,
        num_prompts=args.requests,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        seed=seed,
        env=env,
    )
    return {
        "request_throughput": result.request_throughput,
        "median_ttft_ms": result.median_ttft_s * 1000,
        "median_tpot_ms": result.median_tpot_s * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=8.0, help="requests/s (Poisson)")
    parser.add_argument("--requests", type=int, default=160, help="requests per run")
    parser.add_argument("--input-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    try:
        import labutils.loadtest  # noqa: F401
    except ModuleNotFoundError:
        print("labutils.loadtest is not in this checkout; merge the loadtest work first")
        return 2
    try:
        env = check_environment()
        model = build_tiny_model(env=env)
        engine = start_engine(model, env=env, name="crosscheck-vllm")
    except LabError as exc:
        print(f"cannot start the real engine: {exc}")
        return 2
    runs: dict[str, list[dict[str, float]]] = {"vllm bench serve": [], "labctl loadtest": []}
    server: dict[str, list[dict[str, float]]] = {"vllm bench serve": [], "labctl loadtest": []}
    try:
        name = engine.served_model_name
        # Warm-up: first requests pay one-off costs (allocations, caches) on the server.
        _ours(engine.url, name, argparse.Namespace(**{**vars(args), "requests": 16}), seed=99)
        order = ["vllm bench serve", "labctl loadtest", "labctl loadtest", "vllm bench serve"]
        for i, tool in enumerate(order):
            before = _histogram_totals(engine.url)
            if tool == "vllm bench serve":
                runs[tool].append(_theirs(engine.url, name, model.path, args, seed=i, env=env))
            else:
                runs[tool].append(_ours(engine.url, name, args, seed=i))
            server[tool].append(_server_means_ms(before, _histogram_totals(engine.url)))
            print(f"run {i + 1}/4 {tool}: {runs[tool][-1]} server {server[tool][-1]}", flush=True)
    finally:
        engine.stop()
    print(f"\nreal vLLM {env.vllm_version} (CPU, tiny model), rate {args.rate} req/s, "
          f"{args.requests} requests x 2 per tool, {args.input_tokens} in / "
          f"{args.output_tokens} out tokens")  # fmt: skip
    print(f"{'metric':<22}{'vllm bench':>12}{'loadtest':>12}{'ratio':>8}")
    ok = True
    for metric in _METRICS:
        theirs = statistics.mean(r[metric] for r in runs["vllm bench serve"])
        ours = statistics.mean(r[metric] for r in runs["labctl loadtest"])
        ratio = ours / theirs
        within = abs(ratio - 1) <= args.tolerance
        ok &= within
        print(f"{metric:<22}{theirs:>12.3f}{ours:>12.3f}{ratio:>8.3f} {'ok' if within else 'OFF'}")
    print("\nclient median / server mean in the same run (drift of the machine removed):")
    print(f"{'metric':<22}{'vllm bench':>12}{'loadtest':>12}{'ratio':>8}")
    for metric in _SERVER:
        rel = {
            tool: statistics.mean(
                r[metric] / s[metric] for r, s in zip(runs[tool], server[tool], strict=True)
            )
            for tool in runs
        }
        ratio = rel["labctl loadtest"] / rel["vllm bench serve"]
        print(f"{metric:<22}{rel['vllm bench serve']:>12.3f}{rel['labctl loadtest']:>12.3f}"
              f"{ratio:>8.3f} {'ok' if abs(ratio - 1) <= args.tolerance else 'OFF'}")  # fmt: skip
    print("PASS" if ok else f"FAIL: a ratio is more than {args.tolerance:.0%} from 1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
