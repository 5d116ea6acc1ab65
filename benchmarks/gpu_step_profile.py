"""Time a model's decode, prefill and mixed engine steps on this machine's GPU; write a calibration.

Builds the model from its shape alone (random BF16 weights: nothing is downloaded), then times
one engine step per row, the way the simulator's performance model thinks of a step:

- ``decode``: ``batch`` sequences at ``context`` tokens each produce one token (GQA attention
  over a contiguous KV cache, lm_head on every row);
- ``prefill``: one prompt of ``tokens`` tokens from an empty cache (causal attention through
  ``scaled_dot_product_attention``, lm_head on the last row only, as vLLM samples);
- ``mixed``: both in one step, as chunked prefill schedules them (one GEMM pass over all rows).

On CUDA each step is captured in a CUDA graph and replayed (median of ``--replays``), plus a
device-to-device copy and an 8192^3 GEMM for the achieved bandwidth and FLOP rate. Kernels are
plain PyTorch (unfused RMSNorm/SiLU, no RoPE), so vLLM's fused kernels are a little faster at
small batches. On a CPU (``--device cpu``, e.g. ``--model tiny`` in the tests) the same code
runs eagerly, timed with ``perf_counter``.

The output is a calibration file for ``labctl sim serve MODEL --gpu G --calibration FILE``:
``{"gpu", "gpu_name", "torch", "model", "rows": [{"kind", "batch", "context", "tokens",
"ms"}, ...]}``. Usage (needs PyTorch, which is not a dependency of the lab):

    python benchmarks/gpu_step_profile.py --model llama-3.1-8b --out h200-llama-3.1-8b.json
    python benchmarks/gpu_step_profile.py --model tiny --device cpu --out /tmp/tiny.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

from labutils.catalog import GPUS, MODELS  # noqa: E402

# FFN width of each catalogue model (Hugging Face config "intermediate_size"); the catalogue
# holds only what the simulator needs.
_INTERMEDIATE = {
    "llama-2-7b": 11008,
    "llama-2-13b": 13824,
    "llama-3.1-8b": 14336,
    "llama-3.1-70b": 28672,
    "mistral-7b": 14336,
    "qwen3-8b": 12288,
}
# A model small enough for a CPU test run.
_TINY = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "head_dim": 16,
         "intermediate": 128, "vocab": 256}  # fmt: skip


def model_shape(name: str) -> dict[str, int]:
    """Layers, widths and vocabulary of a catalogue model (or ``tiny``)."""
    if name == "tiny":
        return dict(_TINY)
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; choose tiny or one of: {', '.join(MODELS)}")
    m = MODELS[name]
    return {"layers": m.layers, "hidden": m.hidden, "heads": m.heads, "kv_heads": m.kv_heads,
            "head_dim": m.head_dim, "intermediate": _INTERMEDIATE[name],
            "vocab": m.vocab}  # fmt: skip


class _Model:
    """Random-weight decoder of ``shape`` (no RoPE: elementwise, negligible in time)."""

    def __init__(self, shape: dict[str, int], device: Any, dtype: Any) -> None:
        import torch

        self.torch = torch
        self.s = shape
        h, q = shape["hidden"], shape["heads"] * shape["head_dim"]
        kv = shape["kv_heads"] * shape["head_dim"]

        def w(*dims: int) -> Any:
            return torch.randn(*dims, device=device, dtype=dtype) * 0.02

        self.layers = [
            {"norm1": torch.ones(h, device=device, dtype=dtype), "wqkv": w(h, q + 2 * kv),
             "wo": w(q, h), "norm2": torch.ones(h, device=device, dtype=dtype),
             "w_gate_up": w(h, 2 * shape["intermediate"]), "w_down": w(shape["intermediate"], h)}
            for _ in range(shape["layers"])
        ]  # fmt: skip
        self.embed = w(shape["vocab"], h)
        self.norm = torch.ones(h, device=device, dtype=dtype)
        self.lm_head = w(h, shape["vocab"])

    def _rms(self, x: Any, weight: Any) -> Any:
        x32 = x.float()
        return (x32 * self.torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(
            x.dtype
        ) * weight

    def _qkv(self, x: Any, layer: dict[str, Any]) -> tuple[Any, Any, Any]:
        s = self.s
        q_dim, kv_dim = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
        qkv = self._rms(x, layer["norm1"]) @ layer["wqkv"]
        return qkv[:, :q_dim], qkv[:, q_dim : q_dim + kv_dim], qkv[:, q_dim + kv_dim :]

    def _mlp(self, x: Any, layer: dict[str, Any]) -> Any:
        gate, up = (self._rms(x, layer["norm2"]) @ layer["w_gate_up"]).chunk(2, dim=-1)
        return x + (self.torch.nn.functional.silu(gate) * up) @ layer["w_down"]

    def _decode_attn(self, q: Any, k: Any, v: Any, cache: tuple[Any, Any], ctx: int) -> Any:
        # q (B, heads*hd); cache (B, kv_heads, ctx+1, hd): grouped so each KV head is read once.
        s = self.s
        b, g = q.shape[0], s["heads"] // s["kv_heads"]
        kc, vc = cache
        kc[:, :, ctx] = k.view(b, s["kv_heads"], s["head_dim"])
        vc[:, :, ctx] = v.view(b, s["kv_heads"], s["head_dim"])
        qg = q.view(b, s["kv_heads"], g, s["head_dim"])
        scores = (qg @ kc.transpose(-1, -2)) * s["head_dim"] ** -0.5  # (B, kvh, g, ctx+1)
        out = self.torch.softmax(scores.float(), dim=-1).to(q.dtype) @ vc
        return out.reshape(b, s["heads"] * s["head_dim"])

    def _prefill_attn(self, q: Any, k: Any, v: Any) -> Any:
        s = self.s
        n, g = q.shape[0], s["heads"] // s["kv_heads"]
        qh = q.view(n, s["heads"], s["head_dim"]).transpose(0, 1).unsqueeze(0)
        kh = k.view(n, s["kv_heads"], s["head_dim"]).transpose(0, 1).unsqueeze(0)
        vh = v.view(n, s["kv_heads"], s["head_dim"]).transpose(0, 1).unsqueeze(0)
        kh, vh = kh.repeat_interleave(g, dim=1), vh.repeat_interleave(g, dim=1)
        out = self.torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
        return out.squeeze(0).transpose(0, 1).reshape(n, s["heads"] * s["head_dim"])

    def step(self, ids: Any, n_decode: int, ctx: int, caches: list[tuple[Any, Any]] | None) -> Any:
        """One step: the first ``n_decode`` rows of ``ids`` decode, the rest are one prompt."""
        x = self.embed[ids]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer)
            parts = []
            if n_decode:
                assert caches is not None
                parts.append(self._decode_attn(q[:n_decode], k[:n_decode], v[:n_decode],
                                               caches[i], ctx))  # fmt: skip
            if x.shape[0] > n_decode:
                parts.append(self._prefill_attn(q[n_decode:], k[n_decode:], v[n_decode:]))
            attn = parts[0] if len(parts) == 1 else self.torch.cat(parts)
            x = self._mlp(x + attn @ layer["wo"], layer)
        # Logits for the sampled rows only: every decode row and the prompt's last token.
        rows = x[: n_decode + 1] if x.shape[0] > n_decode else x
        return self._rms(rows, self.norm) @ self.lm_head


def _timer(device: Any, replays: int) -> Callable[[Callable[[], Any]], float]:
    import torch

    def time_cuda(fn: Callable[[], Any]) -> float:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        times = []
        for _ in range(replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        del graph
        return statistics.median(times)

    def time_cpu(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(replays):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return time_cuda if device.type == "cuda" else time_cpu


def profile(
    model: str,
    *,
    device: str = "auto",
    batches: list[int],
    contexts: list[int],
    prefill_tokens: list[int],
    mixed: list[tuple[int, int, int]],
    replays: int = 20,
    gpu: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every requested step; return the calibration document."""
    import torch

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))  # fmt: skip
    dtype = torch.bfloat16
    shape = model_shape(model)
    torch.manual_seed(0)
    net = _Model(shape, dev, dtype)
    timed = _timer(dev, replays)
    rows: list[dict[str, Any]] = []
    doc: dict[str, Any] = {
        "gpu": gpu or _gpu_alias(dev),
        "gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": model,
        "dtype": "bfloat16",
        "method": f"benchmarks/gpu_step_profile.py, random weights, "
        f"{'CUDA graphs' if dev.type == 'cuda' else 'eager CPU'}, median of {replays} replays",
        "rows": rows,
    }
    if dev.type == "cuda":
        n = 1 << 30  # 2 GiB of BF16 copied: 4 GiB moved
        src, dst = torch.empty(n, device=dev, dtype=dtype), torch.empty(n, device=dev, dtype=dtype)
        ms = timed(lambda: dst.copy_(src))
        doc["copy_tb_s"] = round(4 * n / (ms / 1e3) / 1e12, 4)
        del src, dst
        a = torch.randn(8192, 8192, device=dev, dtype=dtype)
        ms = timed(lambda: a @ a)
        doc["gemm_tflops"] = round(2 * 8192**3 / (ms / 1e3) / 1e12, 1)
        del a
    kv_shape = (shape["kv_heads"], shape["head_dim"])
    oom_error = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def run(kind: str, batch: int, ctx: int, tokens: int) -> None:
        try:
            caches = None
            if batch:
                caches = [(torch.zeros(batch, kv_shape[0], ctx + 1, kv_shape[1], device=dev,
                                       dtype=dtype),
                           torch.zeros(batch, kv_shape[0], ctx + 1, kv_shape[1], device=dev,
                                       dtype=dtype)) for _ in range(shape["layers"])]  # fmt: skip
            n_prompt = tokens if kind != "decode" else 0
            ids = torch.randint(0, shape["vocab"], (batch + n_prompt,), device=dev)
            ms = timed(lambda: net.step(ids, batch, ctx, caches))
        except oom_error:
            log(f"skip {kind} batch={batch} context={ctx} tokens={tokens}: out of memory")
            return
        finally:
            caches = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        row = {"kind": kind, "batch": batch or 1, "context": ctx, "tokens": tokens,
               "ms": round(ms, 4)}  # fmt: skip
        rows.append(row)
        log(json.dumps(row))

    for ctx in contexts:
        for b in batches:
            run("decode", b, ctx, b)
    for n in prefill_tokens:
        run("prefill", 0, 0, n)
    for b, ctx, n in mixed:
        run("mixed", b, ctx, n)
    return doc


def _gpu_alias(dev: Any) -> str:
    """The catalogue name of this GPU (h100, a10g, ...), or the device name lower-cased."""
    import torch

    if dev.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(dev).lower()
    for alias in sorted(GPUS, key=len, reverse=True):
        base = alias.split("-")[0]
        if base in name:
            if base == "a100":
                total = torch.cuda.get_device_properties(dev).total_memory
                return "a100-80gb" if total > 60 * 2**30 else "a100-40gb"
            return alias
    return name.replace(" ", "-")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.1-8b", help="catalogue alias, or tiny")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    parser.add_argument("--gpu", default=None, help="catalogue GPU name (default: detected)")
    parser.add_argument("--batches", type=_ints, default=_ints("1,8,32,64,128,256"))
    parser.add_argument("--contexts", type=_ints, default=_ints("512,2048"))
    parser.add_argument("--prefill-tokens", type=_ints, default=_ints("128,512,2048,8192"))
    parser.add_argument(
        "--mixed",
        default="32:512:512,128:512:512,32:512:2048",
        help="decode batch:context:prefill tokens, comma-separated",
    )
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--out", required=True, help="calibration file to write")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("gpu_step_profile: PyTorch is not installed (pip install torch)", file=sys.stderr)
        return 2
    mixed = [tuple(int(v) for v in spec.split(":")) for spec in args.mixed.split(",") if spec]
    doc = profile(
        args.model,
        device=args.device,
        batches=args.batches,
        contexts=args.contexts,
        prefill_tokens=args.prefill_tokens,
        mixed=mixed,  # type: ignore[arg-type]
        replays=args.replays,
        gpu=args.gpu,
    )
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(doc['rows'])} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
