"""Shapes, stream kinds and metric families, checked on recordings of a real vLLM 0.32.0."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from labutils.errors import MetricsError
from labutils.realengine.contract import (
    Recording,
    compare_metric_families,
    compare_paths,
    compare_recordings,
    contract_requests,
    json_paths,
    metric_families,
    response_paths,
    stable_values,
    stream_kinds,
)

# vllm-metrics.md (vllm/v1/metrics/loggers.py): default TTFT buckets.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> Recording:
    data = Path(__file__).resolve().parent.parent / "data"
    return Recording.load(
        data / "real-vllm-0.32.0-cpu-contract.json",
        data / "real-vllm-0.32.0-cpu-contract-metrics.txt",
    )


def test_json_paths_flattens_lists_and_unions_types() -> None:
    paths = json_paths({"a": [{"b": 1}, {"b": None}], "c": "x"})
    assert paths == {
        "$": {"object"},
        "$.a": {"array"},
        "$.a[]": {"object"},
        "$.a[].b": {"int", "null"},
        "$.c": {"str"},
    }


def test_recording_covers_the_whole_suite(real: Recording) -> None:
    assert set(real.responses) == {r.name for r in contract_requests("tiny-llama")}
    frame = real.to_frame()
    assert len(frame) == len(real.responses)
    assert set(frame.columns) >= {"request", "status", "content_type", "chunks", "error_type"}


def test_recorded_real_streams_have_vllm_chunk_sequences(real: Recording) -> None:
    assert stream_kinds(real.responses["chat_stream"].chunks or []) == [
        "role",
        "content",
        "finish",
        "usage",
    ]
    assert stream_kinds(real.responses["completion_stream"].chunks or []) == [
        "content",
        "finish",
        "usage",
    ]
    assert stream_kinds(real.responses["completion_stream_no_usage"].chunks or []) == [
        "content",
        "finish",
    ]
    assert all(r.done for r in real.responses.values() if r.chunks is not None)


def test_recorded_real_errors_are_openai_style(real: Recording) -> None:
    expected = {
        "error_unknown_model": (404, "NotFoundError"),
        "error_max_tokens_over_context": (400, "BadRequestError"),
        "error_prompt_over_context": (400, "BadRequestError"),
        "error_missing_prompt": (400, "BadRequestError"),
        "error_missing_messages": (400, "Bad Request"),
        "error_malformed_json": (400, "Bad Request"),
    }
    for name, (status, error_type) in expected.items():
        resp = real.responses[name]
        assert resp.status == status, name
        assert set(resp.body["error"]) == {"message", "type", "param", "code"}, name
        assert resp.body["error"]["type"] == error_type, name
        assert resp.body["error"]["code"] == status, name
    # An unknown path is FastAPI's plain 404, not an OpenAI error body.
    assert real.responses["error_unknown_path"].body == {"detail": "Not Found"}


def test_real_engine_clamps_prompt_plus_max_tokens_to_the_context(real: Recording) -> None:
    body = real.responses["clamp_prompt_plus_max_tokens_over_context"].body
    assert real.responses["clamp_prompt_plus_max_tokens_over_context"].status == 200
    assert body["usage"]["total_tokens"] == 1024
    assert body["usage"]["completion_tokens"] < 64
    assert body["choices"][0]["finish_reason"] == "length"


def test_usage_adds_up_in_bodies_and_final_chunks(real: Recording) -> None:
    for name in ("completion", "chat"):
        usage = real.responses[name].body["usage"]
        assert usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"]
        assert usage["completion_tokens"] == 8
    chunks = real.responses["chat_stream"].chunks or []
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_compare_paths_finds_missing_extra_and_type_changes(real: Recording) -> None:
    body = real.responses["completion"].body
    assert compare_paths(json_paths(body), json_paths(copy.deepcopy(body))) == []
    changed = copy.deepcopy(body)
    del changed["usage"]["total_tokens"]
    changed["created"] = float(changed["created"])
    changed["extra_field"] = 1
    problems = compare_paths(json_paths(body), json_paths(changed))
    assert "missing $.usage.total_tokens (int)" in problems
    assert "type of $.created: expected int, got float" in problems
    assert "extra $.extra_field (int)" in problems
    assert (
        compare_paths(
            json_paths(body), json_paths(changed), ignore=["$.usage", "$.created", "$.extra_field"]
        )
        == []
    )


def test_stream_paths_union_all_chunks(real: Recording) -> None:
    paths = response_paths(real.responses["chat_stream"])
    assert paths["$chunk.choices[].delta.role"] == {"str"}
    assert paths["$chunk.usage.completion_tokens"] == {"int"}
    assert paths["$chunk.choices[].finish_reason"] == {"null", "str"}


def test_metric_families_of_the_real_scrape(real: Recording) -> None:
    families = metric_families(real.metrics_text, "vllm:")
    ttft = families["vllm:time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    assert ttft.buckets == TTFT_BUCKETS
    assert ttft.label_names == {"engine", "model_name"}
    assert families["vllm:prompt_tokens"].type == "counter"
    assert families["vllm:num_requests_waiting"].type == "gauge"
    assert families["vllm:request_success"].label_names == {
        "engine",
        "model_name",
        "finished_reason",
    }
    # The request-size histograms use a 1-2-5 series up to max_model_len (1024 here).
    assert families["vllm:request_prompt_tokens"].buckets[-1] == 1000.0


def test_recording_agrees_with_the_independent_trial_scrape(
    real: Recording, data_dir: Path
) -> None:
    trial = metric_families((data_dir / "vllm-0.32.0-cpu-metrics.txt").read_text(), "vllm:")
    mine = metric_families(real.metrics_text, "vllm:")
    # Same engine version, different sessions (the trial ran --max-model-len 2048): same
    # families, types and labels; the token-count histograms' 1-2-5 buckets end at the
    # largest value <= max_model_len, so the trial's have one more (2000).
    problems = compare_metric_families(trial, mine, required=trial)
    token_histograms = {
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_max_num_generation_tokens",
        "vllm:request_params_max_tokens",
        "vllm:request_prefill_kv_computed_tokens",
    }
    assert {p.split(":")[0] + ":" + p.split(":")[1] for p in problems} == token_histograms
    for name in token_histograms:
        assert trial[name].buckets == (*mine[name].buckets, 2000.0)


def test_compare_metric_families_reports_each_difference(real: Recording) -> None:
    want = metric_families(real.metrics_text, "vllm:")
    text = real.metrics_text.replace(
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001"',
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.002"',
    )
    text += "# HELP vllm:made_up x\n# TYPE vllm:made_up gauge\nvllm:made_up 1.0\n"
    got = metric_families(text, "vllm:")
    got.pop("vllm:kv_cache_usage_perc")
    problems = compare_metric_families(want, got, required=["vllm:kv_cache_usage_perc"])
    assert "missing family vllm:kv_cache_usage_perc" in problems
    assert any(p.startswith("vllm:time_to_first_token_seconds: buckets") for p in problems)
    assert "extra family vllm:made_up (gauge) not served by the real engine" in problems


def test_invalid_scrape_raises_metrics_error() -> None:
    with pytest.raises(MetricsError, match="not Prometheus"):
        metric_families('vllm:num_requests_waiting{engine="0} 1\n')


def test_stable_values_of_real_answers(real: Recording) -> None:
    chat = stable_values(real.responses["chat_stream"])
    assert chat["objects"] == ["chat.completion.chunk"]
    assert chat["id_prefixes"] == ["chatcmpl"]
    assert chat["finish_reasons"] == ["length"]
    assert chat["roles"] == ["assistant"]
    assert chat["usage_adds_up"] is True
    assert chat["completion_tokens"] == 8
    error = stable_values(real.responses["error_malformed_json"])
    assert (error["error.type"], error["error.param"], error["error.code"]) == (
        "Bad Request",
        "body.1",
        400,
    )


def test_compare_recordings_flags_status_value_and_shape_changes(real: Recording) -> None:
    assert compare_recordings(real, copy.deepcopy(real)) == []
    other = copy.deepcopy(real)
    other.responses["error_unknown_model"].status = 400
    other.responses["error_unknown_model"].body["error"]["type"] = "BadRequestError"
    other.responses["chat"].body["choices"][0]["finish_reason"] = "stop"
    del other.responses["completion"].body["usage"]
    other.responses["chat_stream"].chunks = (other.responses["chat_stream"].chunks or [])[1:]
    problems = compare_recordings(real, other)
    assert "error_unknown_model: status = 400, expected 404" in problems
    assert "error_unknown_model: error.type = 'BadRequestError', expected 'NotFoundError'" in (
        problems
    )
    assert "chat: finish_reasons = ['stop'], expected ['length']" in problems
    assert "completion: missing $.usage (object)" in problems
    assert any(p.startswith("chat_stream: kinds = ['content'") for p in problems)
    allowed = compare_recordings(
        real, other, ignore_values={"chat": ["finish_reasons"]}, ignore_paths=["$.usage"]
    )
    assert not any(p.startswith("chat: finish") or "$.usage" in p for p in allowed)
