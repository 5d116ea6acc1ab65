"""Read manifests (one file, or every ``*.yaml``/``*.yml`` under a folder) keeping file:line.

PyYAML's composer keeps each node's position, so the objects are built from the node tree and
every field path (``("spec", "replicas")``) is mapped to the line it was written on. Validation
messages use it to point at the exact line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labutils.errors import ManifestError

__all__ = ["LoadedObject", "Problem", "iter_manifest_files", "load_objects"]

FieldPath = tuple[str | int, ...]

# Files under a manifests folder that are not Kubernetes objects.
_NOT_OBJECTS = ("lab.yaml",)


@dataclass(frozen=True)
class Problem:
    """One validation finding, printed as ``file:line: Kind/name: field: message``."""

    file: str
    line: int
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        parts = [where, self.obj or "-", self.field or "-", self.message]
        return " ".join(": ".join(parts).split())  # always one line


@dataclass
class LoadedObject:
    """A Kubernetes object with where it came from.

    Attributes:
        data: the object as plain dicts/lists/scalars.
        file: the file it was read from.
        line: 1-based line of the document's first key.
        lines: 1-based line of every field path (``("spec", "replicas")``).
        duplicate_keys: field paths that were written twice in the mapping (YAML keeps the
            last one silently; Kubernetes tools reject them).
    """

    data: dict[str, Any]
    file: Path
    line: int
    lines: dict[FieldPath, int] = field(default_factory=dict)
    duplicate_keys: list[FieldPath] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str | None:
        meta = self.data.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return str(ns) if ns is not None else None

    @property
    def labels(self) -> dict[str, str]:
        meta = self.data.get("metadata")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    @property
    def ref(self) -> str:
        """``Kind/name`` as messages show it."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def line_of(self, path: FieldPath) -> int:
        """Line of ``path``, or of its closest written parent (a missing field's parent)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.line

    def get(self, *path: str | int, default: Any = None) -> Any:
        """The value at ``path`` (keys and list indexes), or ``default`` where missing."""
        value: Any = self.data
        for key in path:
            if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
                value = value[key]
                continue
            if isinstance(value, dict) and isinstance(key, str) and key in value:
                value = value[key]
                continue
            return default
        return value


def _construct(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    dups: list[FieldPath],
    constructor: yaml.constructor.SafeConstructor,
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child = (*path, str(key))
            if key in out:
                dups.append(child)
            out[key] = _construct(value_node, child, lines, dups, constructor)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*path, i), lines, dups, constructor)
            for i, item in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)


def _parse_file(path: Path) -> list[LoadedObject]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from None
    loader = yaml.SafeLoader(text)
    objects: list[LoadedObject] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            dups: list[FieldPath] = []
            data = _construct(node, (), lines, dups, loader)
            if data is None:
                continue  # an empty document (e.g. a trailing ---)
            if not isinstance(data, dict):
                raise ManifestError(
                    f"{path}:{node.start_mark.line + 1}: expected a Kubernetes object "
                    f"(a mapping with apiVersion and kind), got {type(data).__name__}"
                )
            objects.append(LoadedObject(data, path, node.start_mark.line + 1, lines, dups))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{where}: not valid YAML ({problem}); fix the syntax there") from None
    finally:
        loader.dispose()
    return objects


def iter_manifest_files(path: str | Path) -> Iterator[Path]:
    """The YAML files under ``path`` (sorted), or ``path`` itself when it is a file.

    Raises:
        ManifestError: ``path`` does not exist.
    """
    root = Path(path)
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise ManifestError(f"{root}: no such file or folder; pass a manifests folder or file")
    for file in sorted(root.rglob("*")):
        if file.suffix in (".yaml", ".yml") and file.is_file() and file.name not in _NOT_OBJECTS:
            yield file


def load_objects(path: str | Path) -> list[LoadedObject]:
    """Load every Kubernetes object under ``path`` with its source file and line.

    Args:
        path: a rendered folder (``labctl render --out DIR``), the source ``manifests/``, or
            one YAML file. ``lab.yaml`` (the lab config) is skipped.

    Raises:
        ManifestError: a file is unreadable or not valid YAML (message names file:line).
    """
    objects: list[LoadedObject] = []
    for file in iter_manifest_files(path):
        objects.extend(_parse_file(file))
    return objects
