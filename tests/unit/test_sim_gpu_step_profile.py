"""benchmarks/gpu_step_profile.py on a CPU with a tiny model: rows a calibration file can use."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from labutils.catalog import gpu, model
from labutils.sim.perf import EngineConfig, StepShape, load_calibration

pytest.importorskip(
    "torch", reason="PyTorch is not installed (it is not a lab dependency; pip install torch)"
)

_SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_step_profile.py"


def _load_script() -> object:
    spec = importlib.util.spec_from_file_location("gpu_step_profile", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step_profile"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_model_on_cpu_writes_a_usable_calibration(tmp_path: Path) -> None:
    script = _load_script()
    out = tmp_path / "tiny.json"
    code = script.main([  # type: ignore[attr-defined]
        "--model", "tiny", "--device", "cpu", "--batches", "1,4", "--contexts", "8,32",
        "--prefill-tokens", "8,32", "--mixed", "2:8:8", "--replays", "3", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["gpu"] == "cpu" and doc["model"] == "tiny" and doc["torch"]
    kinds = [(r["kind"], r["batch"], r["context"], r["tokens"]) for r in doc["rows"]]
    assert kinds == [
        ("decode", 1, 8, 1), ("decode", 4, 8, 4), ("decode", 1, 32, 1), ("decode", 4, 32, 4),
        ("prefill", 1, 0, 8), ("prefill", 1, 0, 32), ("mixed", 2, 8, 8),
    ]  # fmt: skip
    assert all(r["ms"] > 0 for r in doc["rows"])
    cal = load_calibration(out)
    # Inside the recorded ranges the interpolation needs no GPU rates: any catalogue entry does.
    cfg = EngineConfig(model("llama-3.1-8b"), gpu("h200"), max_model_len=4096, calibration=cal)
    decode = cal.gpu_step_s(cfg, StepShape(decode_seqs=2, decode_context_tokens=2 * 20))
    assert decode > 0
    rows = {(r["kind"], r["batch"], r["context"]): r["ms"] for r in doc["rows"]}
    low, high = sorted((rows[("decode", 1, 8)], rows[("decode", 4, 32)]))
    assert (
        min(low, rows[("decode", 4, 8)], rows[("decode", 1, 32)])
        <= decode * 1e3
        <= max(high, rows[("decode", 4, 8)], rows[("decode", 1, 32)])
    )


def test_missing_torch_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = _load_script()
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert script.main(["--model", "tiny", "--out", str(tmp_path / "x.json")]) == 2  # type: ignore[attr-defined]
