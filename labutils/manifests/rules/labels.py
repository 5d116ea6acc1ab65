"""Labels, zones and duplicate keys: what ``labctl reset`` and the twin find objects by."""

from __future__ import annotations

from labutils.manifests.rules._base import (
    _ZONE_KINDS,
    PART_OF,
    PART_OF_VALUE,
    ZONE_LABEL,
    _Set,
    _zone_dir,
)

__all__ = ["_rule_labels"]


def _rule_labels(s: _Set) -> None:
    for obj in s.everything:
        if obj.labels.get(PART_OF) != PART_OF_VALUE:
            s.add(
                obj,
                ("metadata", "labels", PART_OF),
                f"label {PART_OF}: {PART_OF_VALUE} is missing (labctl reset finds objects by it)",
            )
        zone_dir = _zone_dir(obj)
        if (obj.kind in _ZONE_KINDS or zone_dir) and ZONE_LABEL not in obj.labels:
            s.add(obj, ("metadata", "labels", ZONE_LABEL), f"zone object needs label {ZONE_LABEL}")
        elif zone_dir and obj.labels.get(ZONE_LABEL) != zone_dir:
            s.add(
                obj,
                ("metadata", "labels", ZONE_LABEL),
                f"zone label {obj.labels.get(ZONE_LABEL)!r} does not match its folder "
                f"zones/{zone_dir}/",
            )
        for path in obj.duplicate_keys:
            s.add(obj, path, "key written twice (YAML keeps only the last); remove one")
