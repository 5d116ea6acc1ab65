"""``labctl validate``: schemas plus the lab's rules, reported as ``file:line: object: field``."""

from __future__ import annotations

from pathlib import Path

from labutils.errors import ManifestError
from labutils.manifests.loader import LoadedObject, Problem, _parse_file, iter_manifest_files
from labutils.manifests.rules import check_rules, fmt_path
from labutils.manifests.schemas import schema_findings

__all__ = ["validate"]


def _parse_problem(exc: ManifestError, file: Path) -> Problem:
    text = str(exc)
    where, _, message = text.partition(": ")
    line = 1
    if where.startswith(str(file) + ":"):
        tail = where[len(str(file)) + 1 :]
        line = int(tail) if tail.isdigit() else 1
    return Problem(str(file), line, "-", "-", message or text)


def validate(path: str | Path) -> list[Problem]:
    """Validate the manifests under ``path`` (rendered folder, source folder or one file).

    Every object is checked against its schema (Kubernetes OpenAPI, strict, for built-in kinds;
    the lab's schemas for LeaderWorkerSet, HTTPRoute, Gateway, ScaledObject, NodePool,
    EC2NodeClass, PodMonitor), then the lab's cross-object rules run.

    Returns:
        The problems found, sorted by file and line; empty when the manifests are clean.

    Raises:
        ManifestError: ``path`` does not exist.
    """
    root = Path(path)
    problems: list[Problem] = []
    objects: list[LoadedObject] = []
    invalid: set[int] = set()
    files = list(iter_manifest_files(root))
    if not files:
        raise ManifestError(f"{root}: no *.yaml manifests found; pass a folder of manifests")
    for file in files:
        try:
            loaded = _parse_file(file)
        except ManifestError as exc:
            problems.append(_parse_problem(exc, file))
            continue
        for obj in loaded:
            for field_path, message in schema_findings(obj.data):
                if field_path != ("apiVersion",):  # a stale version alone keeps the shape
                    invalid.add(id(obj))
                problems.append(
                    Problem(
                        str(file), obj.line_of(field_path), obj.ref, fmt_path(field_path), message
                    )
                )
        objects.extend(loaded)
    problems.extend(
        check_rules(objects, is_folder=root.is_dir(), schema_invalid=frozenset(invalid))
    )
    unique = {(p.file, p.line, p.obj, p.field, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.file, p.line, p.field))
