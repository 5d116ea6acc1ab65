"""Find key-like strings (cloud keys, API tokens, bearer tokens) in files, logs and notebooks.

A workshop prints a lot: notebook outputs, twin logs, load-test reports. None of it may carry a
credential. :func:`scan_secrets` looks for the shapes of the credentials the lab touches (AWS
access keys, OpenAI-style ``sk-`` keys, Hugging Face ``hf_`` tokens, GitHub tokens, bearer
tokens, private keys, ``VLLM_API_KEY`` set to a value) and reports file:line with the match
masked, so the report itself never leaks what it found. ``labctl scan-secrets [PATHS]`` runs it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labutils.config import project_root
from labutils.errors import ConfigError

__all__ = [
    "SecretFinding",
    "SecretScan",
    "scan_secrets",
    "scan_text",
    "tracked_files",
]

# (kind, pattern). Shapes follow the providers' documented token formats; the value part must be
# long enough that prose ("sk-..." in a doc, "Bearer {token}" in code) does not match.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws-access-key-id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "aws-secret-access-key",
        re.compile(
            r"(?i)aws_secret_access_key\W{0,3}[=:]\W{0,3}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
    ),
    ("openai-key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}")),
    ("huggingface-token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}")),
    ("bearer-token", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*")),
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    # A value, not a reference: `$VLLM_API_KEY`, `${...}`, `<your key>` and empty are fine.
    (
        "vllm-api-key-value",
        re.compile(r"""VLLM_API_KEY\s*[=:]\s*["']?(?![$<{"'\s])[^\s"',;)}]{6,}"""),
    ),
)
# Files larger than this are data, not text a person wrote or a log a test made.
_MAX_BYTES = 5_000_000


@dataclass(frozen=True)
class SecretFinding:
    """One key-like string: where it is and what it looks like (masked)."""

    file: str
    line: int
    kind: str
    masked: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.masked}"


@dataclass(frozen=True)
class SecretScan:
    """The result of a scan: how many files were read and what was found."""

    files_scanned: int
    findings: tuple[SecretFinding, ...]

    def to_frame(self) -> pd.DataFrame:
        """One row per finding: file, line, kind, masked match."""
        rows = [vars(f) for f in self.findings]
        return pd.DataFrame(rows, columns=["file", "line", "kind", "masked"])


def _mask(text: str) -> str:
    # Enough to recognise the kind, never enough to use it.
    return text[: min(8, len(text) // 3)] + "*" * 6


def scan_text(text: str, file: str = "<text>") -> list[SecretFinding]:
    """Find key-like strings in ``text``; lines are 1-based."""
    findings: list[SecretFinding] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in _PATTERNS:
            for match in pattern.finditer(line):
                findings.append(SecretFinding(file, lineno, kind, _mask(match.group(0))))
    return findings


def tracked_files(root: Path | None = None) -> list[Path]:
    """The files git tracks under ``root`` (default: the project).

    Raises:
        ConfigError: ``root`` is not inside a git work tree.
    """
    base = root or project_root()
    try:
        proc = subprocess.run(
            ["git", "-C", str(base), "ls-files", "-z"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError("git not found; pass the paths to scan explicitly") from None
    if proc.returncode != 0:
        raise ConfigError(f"{base}: not a git work tree; pass the paths to scan explicitly")
    return [base / name for name in proc.stdout.split("\0") if name]


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.is_file():
            yield path
        elif not path.exists():
            raise ConfigError(f"{path}: no such file or folder; pass existing paths to scan")


def scan_secrets(paths: Iterable[str | Path] | None = None) -> SecretScan:
    """Scan files and folders (recursively) for key-like strings.

    Binary files and files over 5 MB are skipped. Notebooks are scanned as their JSON text, so
    cell outputs count.

    Args:
        paths: files or folders; default: every file git tracks in the project.

    Raises:
        ConfigError: a path does not exist, or no paths were given outside a git work tree.
    """
    files = tracked_files() if paths is None else list(_expand(Path(p) for p in paths))
    findings: list[SecretFinding] = []
    scanned = 0
    for file in files:
        try:
            if not file.is_file() or file.stat().st_size > _MAX_BYTES:
                continue
            raw = file.read_bytes()
        except OSError:
            continue  # vanished or unreadable (a log rotated away): nothing to leak from it
        if b"\0" in raw[:4096]:
            continue
        scanned += 1
        findings += scan_text(raw.decode("utf-8", errors="replace"), str(file))
    return SecretScan(scanned, tuple(findings))
