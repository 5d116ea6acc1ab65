"""Security scan of the rendered manifests with checkov (offline) and a documented allow-list.

checkov has no policies for the LeaderWorkerSet CRD, so each LWS is scanned through its pod
templates: the leader and the worker template are written out as plain ``Pod`` objects (same
metadata, same ``spec``), which checkov's Kubernetes checks do read. Findings listed in the
allow-list (``manifests/checkov-allowlist.yaml``, each with its reason) are reported apart and do
not count as failures.

checkov lives in its own virtual environment (``.venv-tools``, made by ``make setup``) because its
pinned dependencies would clash with the lab's; ``$LAB_CHECKOV`` overrides the path.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from labutils.config import manifests_dir, project_root
from labutils.errors import ConfigError, LabError

__all__ = [
    "AllowEntry",
    "CheckovReport",
    "checkov_path",
    "load_allowlist",
    "objects_for_scan",
    "run_checkov",
]


@dataclass(frozen=True)
class CheckovReport:
    """checkov's findings, split into failures and allow-listed findings."""

    passed: int
    failures: tuple[dict[str, str], ...]
    allowed: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def to_frame(self) -> pd.DataFrame:
        """One row per finding: check id, resource, file, allowed (with reason) or not."""
        rows = [{**f, "allowed": False} for f in self.failures]
        rows += [{**f, "allowed": True} for f in self.allowed]
        cols = ["check_id", "check_name", "resource", "file", "allowed", "reason"]
        return pd.DataFrame(rows, columns=cols)


def checkov_path() -> str:
    """Find the checkov executable (``$LAB_CHECKOV``, ``.venv-tools``, then ``PATH``)."""
    candidates = [
        os.environ.get("LAB_CHECKOV"),
        str(project_root() / ".venv-tools/bin/checkov"),
        shutil.which("checkov"),
    ]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return cand
    raise ConfigError(
        "checkov not found: run 'make setup' (it installs checkov into "
        ".venv-tools) or set LAB_CHECKOV to its path"
    )


@dataclass(frozen=True)
class AllowEntry:
    """One allow-listed check: why, and (optionally) which resources it covers."""

    check: str
    reason: str
    resources: tuple[str, ...] = ("*",)

    def covers(self, check_id: str, resource: str) -> bool:
        """True when this entry allows ``check_id`` on ``resource`` (glob patterns)."""
        return check_id == self.check and any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in self.resources
        )


def load_allowlist(path: Path | None = None) -> list[AllowEntry]:
    """Read the allow-list; every entry needs ``check`` and ``reason``, ``resources`` is optional.

    ``resources`` is a list of glob patterns over checkov's resource names (e.g.
    ``Pod.*-worker``) so a check is allowed only where its reason applies.
    """
    file = path or manifests_dir() / "checkov-allowlist.yaml"
    if not file.exists():
        return []
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({_one_line(exc)})") from None
    entries = data.get("allow", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: expected 'allow:' followed by a list of check/reason items")
    allow: list[AllowEntry] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("check") or not entry.get("reason"):
            raise ConfigError(f"{file}: allow[{i}] needs both 'check' and 'reason'")
        resources = entry.get("resources", ["*"])
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise ConfigError(f"{file}: allow[{i}].resources must be a list of glob patterns")
        allow.append(AllowEntry(str(entry["check"]), str(entry["reason"]), tuple(resources)))
    return allow


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _template_as_pod(lws: dict[str, Any], template: dict[str, Any], role: str) -> dict[str, Any]:
    meta = lws.get("metadata", {})
    tmeta = template.get("metadata", {}) or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta.get('name', 'lws')}-{role}",
            "namespace": meta.get("namespace", "default"),
            "labels": {**(meta.get("labels") or {}), **(tmeta.get("labels") or {})},
            "annotations": tmeta.get("annotations") or {},
        },
        "spec": template.get("spec", {}),
    }


def objects_for_scan(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the objects checkov should see: each LWS replaced by its leader/worker Pods."""
    out: list[dict[str, Any]] = []
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj:
            continue  # lab.yaml, the allow-list: settings, not Kubernetes objects
        if obj.get("kind") == "LeaderWorkerSet":
            lwt = obj.get("spec", {}).get("leaderWorkerTemplate", {})
            worker = lwt.get("workerTemplate")
            leader = lwt.get("leaderTemplate") or worker
            if leader:
                out.append(_template_as_pod(obj, leader, "leader"))
            if worker and str(lwt.get("size", 1)) != "1":
                out.append(_template_as_pod(obj, worker, "worker"))
        else:
            out.append(obj)
    return out


def _read_yaml_tree(file: Path) -> list[dict[str, Any]]:
    try:
        return [d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict)]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{file}: not valid YAML ({_one_line(exc)}); fix or re-render it"
        ) from None


def run_checkov(
    path: Path | str, *, allowlist: list[AllowEntry] | None = None, exclude: Iterable[str] = ()
) -> CheckovReport:
    """Scan a folder (or file) of manifests with checkov, LWS pod templates included.

    Args:
        path: rendered manifests (``labctl render --out DIR``) or any YAML tree.
        allowlist: allow-list entries; default :func:`load_allowlist` (``[]``: none).
        exclude: path parts to skip (e.g. ``optional``).

    Raises:
        LabError: checkov could not run or its output could not be read.
    """
    root = Path(path)
    if not root.exists():
        raise ConfigError(
            f"{root}: no such file or folder; render first: labctl render --out {root}"
        )
    allow = load_allowlist() if allowlist is None else allowlist
    skip = set(exclude)
    files = [root] if root.is_file() else sorted(root.rglob("*.y*ml"))
    # Exclude by the path *below* root, so a root folder named like an excluded part still works.
    files = [f for f in files if not skip.intersection(f.relative_to(root).parts[:-1])]
    docs = [d for f in files for d in _read_yaml_tree(f)]
    scan = objects_for_scan(docs)
    if not scan:
        raise ConfigError(
            f"{root}: no Kubernetes objects to scan; point at rendered manifests "
            "(labctl render --out DIR)"
        )
    with tempfile.TemporaryDirectory(prefix="lab-checkov-") as tmp:
        (Path(tmp) / "objects.yaml").write_text(yaml.safe_dump_all(scan, sort_keys=False))
        try:
            proc = subprocess.run(
                [
                    checkov_path(),
                    "-d",
                    tmp,
                    "--framework",
                    "kubernetes",
                    "-o",
                    "json",
                    "--skip-download",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(
                f"checkov on {root} ran over 300 s; retry on a less loaded machine"
            ) from None
    last_err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise LabError(f"checkov failed on {root} (exit {proc.returncode}): {last_err}")
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise LabError(f"checkov on {root} printed no JSON report: {last_err}") from None
    reports = result if isinstance(result, list) else [result]
    passed = 0
    failures: list[dict[str, str]] = []
    allowed: list[dict[str, str]] = []
    for rep in reports:
        if not isinstance(rep, dict) or "results" not in rep:
            continue
        passed += int(rep.get("summary", {}).get("passed", 0))
        for chk in rep["results"].get("failed_checks", []):
            resource = str(chk.get("resource", ""))
            entry = next((a for a in allow if a.covers(chk["check_id"], resource)), None)
            item = {
                "check_id": chk["check_id"],
                "check_name": chk.get("check_name", ""),
                "resource": resource,
                "file": str(root),
                "reason": entry.reason if entry else "",
            }
            (allowed if entry else failures).append(item)
    return CheckovReport(passed, tuple(failures), tuple(allowed))
