"""SSE chunk counting: the compact fast path agrees with full JSON parsing."""

from __future__ import annotations

import json

import pytest

from labutils.loadtest.sender import _count_compact, _scan_events


def _event(obj: object, *, compact: bool = True) -> bytes:
    text = json.dumps(obj, separators=(",", ":") if compact else None)
    return b"data: " + text.encode() + b"\n\n"


def _completion(text: str) -> dict[str, object]:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text}]}


def _chat(delta: dict[str, object]) -> dict[str, object]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([_completion(" a"), _completion(' "quoted"'), _completion(""), _completion("\n")], 3),
        (
            [
                _chat({"role": "assistant", "content": ""}),
                _chat({"content": "x"}),
                _chat({"content": None}),
                _chat({"content": "y z"}),
            ],
            2,
        ),
    ],
)
def test_fast_path_matches_parsing(chunks: list[dict[str, object]], expected: int) -> None:
    body = b"".join(_event(c) for c in [*chunks, USAGE]) + b"data: [DONE]\n\n"
    fast = _count_compact(body)
    slow = _scan_events(body)
    assert fast == slow
    assert (
        fast[0] == expected and fast[1] is not None and fast[1]["usage"]["completion_tokens"] == 3
    )
    assert fast[2] is True
    # Not compact JSON: only the parsing path sees empty strings written with spaces.
    spaced = b"".join(_event(c, compact=False) for c in chunks)
    assert _scan_events(spaced)[0] == expected


def test_error_in_stream_is_reported() -> None:
    body = _event(_completion("a")) + _event({"error": {"message": "boom", "code": 500}})
    content, _, done, error = _scan_events(body)
    assert content == 1 and not done and error is not None and "boom" in error
