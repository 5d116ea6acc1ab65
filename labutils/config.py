"""Lab settings: the target (``LAB_TARGET``), paths, and the lab config that drives rendering.

The lab config lives in ``manifests/lab.yaml`` (one file, edited by participants); environment
variables override paths: ``LAB_TARGET`` (``local`` | ``eks``), ``LAB_MANIFESTS`` (source
manifests folder), ``LAB_STATE_DIR`` (local twin state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from platformdirs import user_cache_dir

from labutils.errors import ConfigError

__all__ = [
    "TARGETS",
    "LabConfig",
    "default_state_dir",
    "lab_files_root",
    "lab_target",
    "load_config",
    "manifests_dir",
    "project_root",
]

TARGETS = ("local", "eks")


def project_root() -> Path:
    """The folder above the package: the checkout for an editable install, else site-packages."""
    return Path(__file__).resolve().parent.parent


def lab_files_root() -> Path:
    """Where ``manifests/`` and ``notebooks/`` are: the checkout, or the wheel's bundled copy.

    An editable install (``make setup``) reads the checkout, so edits to ``manifests/`` take
    effect at once; ``pip install .`` installs them as ``labutils/_bundled/``.
    """
    checkout = project_root()
    if (checkout / "manifests" / "lab.yaml").is_file():
        return checkout
    return Path(__file__).resolve().parent / "_bundled"


def manifests_dir() -> Path:
    """The source manifests folder (``$LAB_MANIFESTS``, else ``manifests/`` of the lab)."""
    return Path(os.environ.get("LAB_MANIFESTS") or lab_files_root() / "manifests")


def default_state_dir() -> Path:
    """Where the local twin records what it started (``$LAB_STATE_DIR`` or the user cache)."""
    env = os.environ.get("LAB_STATE_DIR")
    return Path(env) if env else Path(user_cache_dir("vllm-lws-lab")) / "twin"


def lab_target(value: str | None = None) -> str:
    """Return the chosen target: ``value``, else ``$LAB_TARGET``, else ``local``."""
    target = (value or os.environ.get("LAB_TARGET") or "local").strip().lower()
    if target not in TARGETS:
        raise ConfigError(
            f"LAB_TARGET={target!r} is not a target; choose one of: {', '.join(TARGETS)}"
        )
    return target


@dataclass(frozen=True)
class LabConfig:
    """What the lab deploys; rendering turns this plus ``manifests/`` into per-zone YAML.

    Attributes mirror ``manifests/lab.yaml``; see the comments there for each field.
    """

    namespace: str = "vllm-lab"
    zones: tuple[str, ...] = ("us-west-2a", "us-west-2b", "us-west-2c")
    model: str = "meta-llama/Llama-3.1-70B-Instruct"
    served_model_name: str = "llama-3.1-70b"
    instance_type: str = "g5.12xlarge"
    tensor_parallel_size: int = 4
    pipeline_parallel_size: int = 2
    replicas: int = 2
    min_replicas: int = 1
    max_replicas: int = 4
    route_weights: dict[str, int] = field(default_factory=dict)
    cluster_name: str = "vllm-lab"
    gateway_class_name: str = "eg"
    model_storage_class: str = "efs-sc"
    # Local twin: a file of measured step times (benchmarks/gpu_step_profile.py) the simulated
    # engines interpolate instead of their performance model; absolute here, "" for none.
    engine_calibration: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def weight(self, zone: str) -> int:
        """HTTPRoute weight of ``zone`` (default 1, an equal split)."""
        return int(self.route_weights.get(zone, 1))


_INT_FIELDS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "replicas",
    "min_replicas",
    "max_replicas",
)

_STR_FIELDS = (
    "namespace",
    "model",
    "served_model_name",
    "instance_type",
    "cluster_name",
    "gateway_class_name",
    "model_storage_class",
)


def load_config(path: str | Path | None = None) -> LabConfig:
    """Read the lab config (default ``manifests/lab.yaml``) into a :class:`LabConfig`.

    Raises:
        ConfigError: the file is missing, not YAML, or a field has the wrong type.
    """
    cfg_path = Path(path) if path else manifests_dir() / "lab.yaml"
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{cfg_path}: lab config not found; pass --config or set "
            "LAB_MANIFESTS to a folder with lab.yaml"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{cfg_path}:{mark.line + 1}" if mark else str(cfg_path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of settings, got {type(raw).__name__}")
    known = set(LabConfig.__dataclass_fields__) - {"extra"}
    values: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
    extra = {k: v for k, v in raw.items() if k not in known}
    if "zones" in values:
        zones = values["zones"]
        if not isinstance(zones, list) or not zones or not all(isinstance(z, str) for z in zones):
            raise ConfigError(f"{cfg_path}: 'zones' must be a non-empty list of zone names")
        values["zones"] = tuple(zones)
    for name in _INT_FIELDS:
        if name in values and (not isinstance(values[name], int) or values[name] < 0):
            raise ConfigError(
                f"{cfg_path}: '{name}' must be a non-negative integer, got {values[name]!r}"
            )
    for name in _STR_FIELDS:
        if name in values and (not isinstance(values[name], str) or not values[name]):
            raise ConfigError(
                f"{cfg_path}: '{name}' must be a non-empty string, got {values[name]!r}"
            )
    if "route_weights" in values and not isinstance(values["route_weights"], dict):
        raise ConfigError(f"{cfg_path}: 'route_weights' must map zone -> weight")
    if "engine_calibration" in values:
        values["engine_calibration"] = _calibration_path(values["engine_calibration"], cfg_path)
    return LabConfig(**values, extra=extra)


def _calibration_path(value: Any, cfg_path: Path) -> str:
    # A relative path is relative to lab.yaml's folder, like every path a config file names.
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ConfigError(
            f"{cfg_path}: 'engine_calibration' must be a file path or empty, got {value!r}"
        )
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (cfg_path.parent / path).resolve())
