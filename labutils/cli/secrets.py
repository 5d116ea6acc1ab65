"""``labctl scan-secrets``: look for secrets in tracked files and logs."""

from __future__ import annotations

import argparse
from typing import Any

from labutils.errors import LabError
from labutils.secretscan import (
    scan_secrets,
)

__all__ = [
    "register",
]


def _cmd_scan_secrets(args: argparse.Namespace) -> int:
    result = scan_secrets(args.paths or None)
    for finding in result.findings:
        print(finding)
    print(f"scan-secrets: {result.files_scanned} files, {len(result.findings)} key-like strings")
    if result.findings:
        raise LabError(
            f"{len(result.findings)} key-like string(s) found (listed above); remove them and "
            "rotate the keys"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``labctl scan-secrets``."""
    parser = subparsers.add_parser(
        "scan-secrets", help="find key-like strings in files, logs and notebooks"
    )
    parser.add_argument(
        "paths", nargs="*", help="files or folders (default: every file git tracks)"
    )
    parser.set_defaults(handler=_cmd_scan_secrets)
