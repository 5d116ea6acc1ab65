"""Calibration files: the shipped H200 file reproduces the recorded steps; loading and refusals."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from labutils.catalog import gpu, model
from labutils.errors import SimulatorError
from labutils.sim.perf import EngineConfig, StepShape, gpu_step_s, load_calibration, step_time_s
from labutils.sim.server import build_engine

_DATA = Path(__file__).parents[1] / "data"
_RECORDED = [
    json.loads(line)
    for line in (_DATA / "h200-llama-3.1-8b-step-kernels.jsonl").read_text().splitlines()
]
_SHIPPED = str(resources.files("labutils").joinpath("data/calibration/h200-llama-3.1-8b.json"))


def _h200_cfg() -> EngineConfig:
    return EngineConfig(
        model("llama-3.1-8b"),
        gpu("h200"),
        max_model_len=4096,
        calibration=load_calibration(_SHIPPED),
    )


def test_shipped_file_names_its_origin() -> None:
    cal = load_calibration(_SHIPPED)
    assert (cal.gpu, cal.model, cal.gpu_name) == ("h200", "llama-3.1-8b", "NVIDIA H200")
    assert "recorded kernel timings" in cal.source or "kernel timings" in cal.source
    assert "no CUDA machine" in cal.source


@pytest.mark.parametrize(
    "row", [r for r in _RECORDED if r["kind"] in ("decode", "prefill")], ids=lambda r: str(r)
)
def test_interpolation_reproduces_the_recorded_steps(row: dict[str, float]) -> None:
    cfg = _h200_cfg()
    if row["kind"] == "decode":
        shape = StepShape(
            decode_seqs=row["batch"], decode_context_tokens=row["batch"] * row["context"]
        )
    else:
        n = row["tokens"]
        shape = StepShape(
            prefill_tokens=n, prefill_attention_pairs=n * (n + 1) // 2, prefill_seqs=1
        )
    assert gpu_step_s(cfg, shape) * 1e3 == pytest.approx(row["ms"], rel=1e-3)


def test_between_and_beyond_the_rows() -> None:
    cfg = _h200_cfg()

    def decode_ms(batch: int, context: int = 512) -> float:
        return gpu_step_s(cfg, StepShape(batch, batch * context)) * 1e3

    assert decode_ms(32) < decode_ms(48) < decode_ms(64)
    assert decode_ms(300) > decode_ms(256)  # extrapolated along the last segment
    assert decode_ms(128, context=1024) > decode_ms(128)  # more KV than the recorded context
    prefill = StepShape(
        prefill_tokens=1024, prefill_attention_pairs=1024 * 1025 // 2, prefill_seqs=1
    )
    later_chunk = StepShape(
        prefill_tokens=1024, prefill_attention_pairs=1024 * 3000, prefill_seqs=1
    )
    assert 16.26 < gpu_step_s(cfg, prefill) * 1e3 < 59.87
    assert gpu_step_s(cfg, later_chunk) > gpu_step_s(cfg, prefill)


def test_a_mixed_step_adds_its_parts_less_the_shared_weights() -> None:
    cfg = _h200_cfg()
    recorded = {
        (r["kind"], r.get("batch"), r.get("tokens")): r["ms"] for r in _RECORDED if "ms" in r
    }
    mixed = StepShape(32, 32 * 512, 512, 512 * 513 // 2, 1)
    expected = recorded[("decode", 32, None)] + recorded[("prefill", None, 512)]
    expected -= recorded[("decode", 1, None)]
    assert gpu_step_s(cfg, mixed) * 1e3 == pytest.approx(expected, rel=1e-3)


def test_engine_uses_the_file_for_its_gpu_and_model() -> None:
    engine = build_engine("llama-3.1-8b", "h200", max_model_len=4096, calibration=_SHIPPED)
    shape = StepShape(decode_seqs=8, decode_context_tokens=8 * 512)
    assert engine.cfg.calibration is not None
    assert step_time_s(engine.cfg, shape) * 1e3 == pytest.approx(6.4514 + 0.1, rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model": "llama-3.1-8b", "gpu": "h100"}, "is for llama-3.1-8b on one h200"),
        ({"model": "mistral-7b", "gpu": "h200"}, "not mistral-7b on h200"),
        ({"model": "llama-3.1-8b", "gpu": "h200", "tensor_parallel_size": 2}, "TP=2"),
    ],
)
def test_a_file_for_another_setup_is_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(SimulatorError) as info:
        build_engine(**kwargs, max_model_len=4096, calibration=_SHIPPED, with_metrics=False)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "No such file"),
        ("{not json", "not JSON"),
        ('{"gpu": "h200", "model": "llama-3.1-8b"}', "'rows' list"),
        ('{"gpu": "h200", "rows": []}', "'model' must name"),
        ('{"gpu": "h200", "model": "llama-3.1-8b", "rows": [{"kind": "decode"}]}', "row 0"),
        (
            '{"gpu": "h200", "model": "llama-3.1-8b", "rows": [{"kind": "decode", "ms": 5}]}',
            "needs decode and prefill rows",
        ),
    ],
)
def test_bad_files_are_refused_with_one_line(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    path = tmp_path / "cal.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SimulatorError) as info:
        load_calibration(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_serve_flag_refuses_a_file_for_another_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from labutils.sim.__main__ import main

    code = main(["serve", "llama-3.1-8b", "--gpu", "h100", "--calibration", _SHIPPED])
    err = capsys.readouterr().err
    assert code != 0
    assert "is for llama-3.1-8b on one h200" in err and len(err.strip().splitlines()) == 1
