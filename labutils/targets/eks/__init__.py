"""The EKS path: the lab's operations on a real cluster through the official ``kubernetes`` client.

:class:`EksBackend` implements :class:`labutils.protocol.Backend`; :func:`preflight` checks a
cluster is ready for the lab; :func:`create_participants` / :func:`delete_participants` manage
per-participant namespaces. ``labctl preflight|reset|participants`` live in :mod:`.cli`.
"""

from labutils.targets.eks._connect import connect
from labutils.targets.eks.backend import RESET_KINDS, EksBackend
from labutils.targets.eks.participants import create_participants, delete_participants
from labutils.targets.eks.preflight import preflight

__all__ = [
    "RESET_KINDS",
    "EksBackend",
    "connect",
    "create_participants",
    "delete_participants",
    "preflight",
]
