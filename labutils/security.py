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

import argparse
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

from labutils.config import project_root
from labutils.errors import ConfigError, LabError

__all__ = [
    "CheckovReport",
    "checkov_path",
    "load_allowlist",
    "objects_for_scan",
    "register",
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


def load_allowlist(path: Path | None = None) -> dict[str, str]:
    """Read the allow-list: ``{check_id: reason}``; every entry must give a reason."""
    file = path or project_root() / "manifests" / "checkov-allowlist.yaml"
    if not file.exists():
        return {}
    data = yaml.safe_load(file.read_text()) or {}
    entries = data.get("allow", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: expected 'allow:' followed by a list of check/reason items")
    allow: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("check") or not entry.get("reason"):
            raise ConfigError(f"{file}: allow[{i}] needs both 'check' and 'reason'")
        allow[str(entry["check"])] = str(entry["reason"])
    return allow


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
        if not isinstance(obj, dict):
            continue
        if obj.get("kind") == "LeaderWorkerSet":
            lwt = obj.get("spec", {}).get("leaderWorkerTemplate", {})
            worker = lwt.get("workerTemplate")
            leader = lwt.get("leaderTemplate") or worker
            if leader:
                out.append(_template_as_pod(obj, leader, "leader"))
            if worker and lwt.get("size", 1) > 1:
                out.append(_template_as_pod(obj, worker, "worker"))
        else:
            out.append(obj)
    return out


def _read_yaml_tree(path: Path) -> list[dict[str, Any]]:
    files = [path] if path.is_file() else sorted(path.rglob("*.y*ml"))
    docs: list[dict[str, Any]] = []
    for file in files:
        try:
            docs += [d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML ({exc})") from None
    return docs


def run_checkov(
    path: Path | str, *, allowlist: dict[str, str] | None = None, exclude: Iterable[str] = ()
) -> CheckovReport:
    """Scan a folder (or file) of manifests with checkov, LWS pod templates included.

    Args:
        path: rendered manifests (``labctl render --out DIR``) or any YAML tree.
        allowlist: ``{check_id: reason}``; default :func:`load_allowlist`.
        exclude: path parts to skip (e.g. ``optional``).

    Raises:
        LabError: checkov could not run or its output could not be read.
    """
    root = Path(path)
    allow = load_allowlist() if allowlist is None else allowlist
    docs = _read_yaml_tree(root)
    if exclude:
        files = [
            f for f in sorted(root.rglob("*.y*ml")) if not any(part in f.parts for part in exclude)
        ]
        docs = [d for f in files for d in _read_yaml_tree(f)]
    scan = objects_for_scan(docs)
    with tempfile.TemporaryDirectory(prefix="lab-checkov-") as tmp:
        (Path(tmp) / "objects.yaml").write_text(yaml.safe_dump_all(scan, sort_keys=False))
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
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise LabError(
            f"checkov failed on {root} (exit {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1:] or 'no output'}"
        )
    result = json.loads(proc.stdout)
    reports = result if isinstance(result, list) else [result]
    passed = 0
    failures: list[dict[str, str]] = []
    allowed: list[dict[str, str]] = []
    for rep in reports:
        if not isinstance(rep, dict) or "results" not in rep:
            continue
        passed += int(rep.get("summary", {}).get("passed", 0))
        for chk in rep["results"].get("failed_checks", []):
            item = {
                "check_id": chk["check_id"],
                "check_name": chk.get("check_name", ""),
                "resource": chk.get("resource", ""),
                "file": str(root),
                "reason": allow.get(chk["check_id"], ""),
            }
            (allowed if chk["check_id"] in allow else failures).append(item)
    return CheckovReport(passed, tuple(failures), tuple(allowed))


def _cmd_scan(args: argparse.Namespace) -> int:
    report = run_checkov(Path(args.path), exclude=args.exclude)
    frame = report.to_frame()
    if not frame.empty:
        print(frame.to_string(index=False))
    print(
        f"checkov: {report.passed} passed, {len(report.failures)} failed, "
        f"{len(report.allowed)} allow-listed"
    )
    return 1 if report.failures else 0


def register(subparsers: Any) -> None:
    """Add ``labctl scan``."""
    scan = subparsers.add_parser("scan", help="security-scan manifests with checkov (offline)")
    scan.add_argument("path", help="rendered manifests folder (labctl render --out DIR)")
    scan.add_argument(
        "--exclude",
        action="append",
        default=["optional"],
        help="skip folders with this name (default: optional)",
    )
    scan.set_defaults(handler=_cmd_scan)
