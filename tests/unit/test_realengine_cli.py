"""``labctl realengine ...``: registered, and expected failures are one line, exit != 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from labutils.cli import main


def test_check_without_venv_is_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["realengine", "check", "--venv", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "make real-engine" in err and "Traceback" not in err


def test_serve_refuses_more_than_three_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["realengine", "serve", "--replicas", "4"]) == 2
    assert "choose 1, 2 or 3" in capsys.readouterr().err


def test_build_model_refuses_to_build_without_a_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAB_VLLM_VENV", str(tmp_path / "none"))
    code = main(["realengine", "build-model", "--model-dir", str(tmp_path / "m")])
    assert code == 2
    assert "no vLLM venv" in capsys.readouterr().err
