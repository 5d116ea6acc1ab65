"""The EKS path: the lab's operations on a real cluster through the official ``kubernetes`` client.

:class:`EksBackend` implements :class:`labutils.backend.Backend`; :func:`preflight` checks a
cluster is ready for the lab; :func:`create_participants` / :func:`delete_participants` manage
per-participant namespaces. ``labctl preflight|reset|participants`` live in :mod:`.cli`.
"""

from labutils.cluster._connect import connect
from labutils.cluster.backend import RESET_KINDS, EksBackend
from labutils.cluster.participants import create_participants, delete_participants
from labutils.cluster.preflight import preflight

__all__ = [
    "RESET_KINDS",
    "EksBackend",
    "connect",
    "create_participants",
    "delete_participants",
    "preflight",
]
