"""No credentials in the repo or in notebook outputs; the scanner is proven on planted keys.

The planted keys are assembled at run time (never written literally here), so this file itself
stays clean for the repo scan.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labutils.config import project_root
from labutils.errors import ConfigError
from labutils.secretscan import scan_secrets, scan_text, tracked_files

_ALNUM = "Q7x9Lm2Pz4Kw8Rt6Vb3Nc5Hd1Jf0Gs"


def _planted() -> dict[str, str]:
    return {
        "aws-access-key-id": "AKIA" + "Z3" * 8,
        "aws-secret-access-key": "aws_secret_access_key = " + (_ALNUM + "abcdefghij")[:40],
        "openai-key": "sk-" + "proj-" + _ALNUM,
        "huggingface-token": "hf_" + _ALNUM + "abc",
        "github-token": "ghp_" + _ALNUM + "abcdef",
        "bearer-token": "Authorization: Bearer " + _ALNUM,
        "private-key": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "vllm-api-key-value": "VLLM_API_KEY" + "=lab-" + _ALNUM[:12],
    }


@pytest.mark.parametrize("kind", sorted(_planted()))
def test_planted_secret_is_caught_and_masked(kind: str) -> None:
    secret = _planted()[kind]
    findings = scan_text(f"first line\nprefix {secret} suffix\n", "planted.txt")
    assert [(f.kind, f.line) for f in findings] == [(kind, 2)]
    assert findings[0].masked.endswith("******")
    assert _ALNUM[:12] not in str(findings[0])  # the report never repeats the key


@pytest.mark.parametrize(
    "text",
    [
        'headers = {"Authorization": f"Bearer {token}"}',
        "export VLLM_API_KEY=$VLLM_API_KEY",
        "VLLM_API_KEY=<your key>",
        'env["VLLM_API_KEY"] = api_key',
        "keys look like sk-... and hf_...",
        '--from-literal=api-key="$VLLM_API_KEY"',
    ],
)
def test_references_and_placeholders_are_not_secrets(text: str) -> None:
    assert scan_text(text) == []


def test_planted_secret_in_notebook_output_and_log(tmp_path: Path) -> None:
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["import os\n", "os.environ['HF_TOKEN']"],
                "outputs": [{"output_type": "execute_result", "data": {
                    "text/plain": [repr(_planted()["huggingface-token"])]}}],
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "01.ipynb").write_text(json.dumps(notebook, indent=1))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "engine.log").write_text("GET /v1/models\n" + _planted()["openai-key"])
    (tmp_path / "blob.bin").write_bytes(b"\0" + _planted()["openai-key"].encode())
    result = scan_secrets([tmp_path])
    assert result.files_scanned == 2  # the binary file is skipped
    found = {(Path(f.file).name, f.kind) for f in result.findings}
    assert found == {("01.ipynb", "huggingface-token"), ("engine.log", "openai-key")}
    assert list(result.to_frame().columns) == ["file", "line", "kind", "masked"]


def test_cli_reports_planted_secret_with_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text(_planted()["aws-access-key-id"] + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "scan-secrets", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=project_root(), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "notes.md:1: aws-access-key-id" in proc.stdout
    assert proc.stderr.count("\n") == 1 and "rotate" in proc.stderr
    assert "AKIAZ3Z3" not in proc.stdout + proc.stderr


def test_cli_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "labutils.cli", "scan-secrets", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, cwd=project_root(), check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "nope: no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_tracked_files_hold_no_secrets() -> None:
    try:
        files = tracked_files()
    except ConfigError as exc:
        pytest.skip(f"not a git checkout: {exc}")
    result = scan_secrets(files)
    assert result.files_scanned > 50
    assert not result.findings, "\n".join(map(str, result.findings))


def test_notebooks_and_reports_hold_no_secrets() -> None:
    root = project_root()
    notebooks = sorted((root / "notebooks").glob("*.ipynb")) + sorted(
        (root / "reports").glob("**/*.ipynb")
    )
    if not notebooks:
        pytest.skip("no notebooks or executed reports in this checkout")
    result = scan_secrets(notebooks)
    assert result.files_scanned == len(notebooks)
    assert not result.findings, "\n".join(map(str, result.findings))
