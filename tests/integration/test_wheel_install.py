"""``pip install .`` without extras gives a working ``labctl`` and the lab's files.

Builds the wheel, installs it into a fresh virtual environment (dependencies from the package
index, as a participant would get them) and runs the commands a participant runs first, from a
folder outside the checkout so nothing can be read from it by accident.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("vllm_lws_lab-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
         "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.fail(f"pip install {wheel.name} failed: {pip.stderr[-2000:]}")
    return env_dir


def _labctl(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env_dir / "bin" / "labctl"), *args],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)},
    )  # fmt: skip


def test_wheel_without_extras_runs_labctl_render_and_validate(
    installed: Path, tmp_path: Path
) -> None:
    helped = _labctl(installed, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for command in ("render", "validate", "twin", "lab", "loadtest", "preflight"):
        assert command in helped.stdout
    rendered = _labctl(installed, "render", "--out", str(tmp_path / "rendered"), cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert list((tmp_path / "rendered").rglob("*.yaml"))
    validated = _labctl(installed, "validate", str(tmp_path / "rendered"), cwd=tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    listed = _labctl(installed, "lab", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "00-setup-and-preflight.ipynb" in listed.stdout
    # the notebooks' own imports resolve without the dev extra (papermill, nbformat, kernel)
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import papermill, nbformat, ipykernel, jupyterlab, labutils.lessons.n01_deploy"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
