"""``labctl scan``: security-scan rendered manifests with checkov."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from labutils.security import (
    load_allowlist,
    run_checkov,
)

__all__ = [
    "register",
]


def _cmd_scan(args: argparse.Namespace) -> int:
    allow = [] if args.no_allowlist else load_allowlist(args.allowlist)
    report = run_checkov(Path(args.path), allowlist=allow, exclude=args.exclude)
    frame = report.to_frame()
    failed = frame[~frame["allowed"]]
    if not failed.empty:
        print(failed[["check_id", "resource", "check_name"]].to_string(index=False))
    if report.allowed:
        counts = frame[frame["allowed"]].groupby("check_id").size()
        print("allow-listed: " + ", ".join(f"{c} x{n}" for c, n in counts.items()))
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
    scan.add_argument(
        "--allowlist",
        type=Path,
        default=None,
        help="allow-list file (default: manifests/checkov-allowlist.yaml)",
    )
    scan.add_argument(
        "--no-allowlist", action="store_true", help="count every finding as a failure"
    )
    scan.set_defaults(handler=_cmd_scan)
