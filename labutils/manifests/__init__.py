"""The lab's Kubernetes manifests: render (``labctl render``), load with file:line, validate
(``labctl validate``).

``manifests/`` holds plain, valid objects for one zone plus ``lab.yaml``; :func:`render` turns
them into the per-zone layout of ``docs/contracts.md``; :func:`load_objects` reads any of it
back with file and line; :func:`validate` checks schemas and the lab's rules.
"""

from __future__ import annotations

from labutils.manifests.loader import LoadedObject, Problem, load_objects
from labutils.manifests.render import render
from labutils.manifests.validate import validate

__all__ = [
    "LoadedObject",
    "Problem",
    "load_objects",
    "render",
    "validate",
]
