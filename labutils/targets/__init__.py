"""The lab's two targets behind one protocol: ``get_backend()`` picks the local twin or EKS.

Both :class:`~labutils.targets.twin.TwinBackend` and :class:`~labutils.targets.eks.EksBackend`
are assigned to a :class:`~labutils.protocol.Backend`-typed variable below, so mypy checks each
against the protocol (a method with a wrong signature fails ``make test``). The targets are
imported inside the function so that ``import labutils.targets`` stays cheap and the twin never
imports the ``kubernetes`` client.
"""

from __future__ import annotations

from typing import Any

from labutils.config import lab_target
from labutils.protocol import Backend, FaultInjector

__all__ = ["fault_injector", "get_backend"]


def get_backend(target: str | None = None, **options: Any) -> Backend:
    """Return the backend for ``target`` (default ``$LAB_TARGET``, else ``local``).

    Args:
        target: ``local`` or ``eks``.
        **options: passed to the backend (e.g. ``state_dir`` for the twin, ``kubeconfig`` and
            ``context`` for EKS).
    """
    backend: Backend
    if lab_target(target) == "local":
        from labutils.targets.twin import TwinBackend

        backend = TwinBackend(**options)
    else:
        from labutils.targets.eks import EksBackend

        backend = EksBackend(**options)
    return backend


def fault_injector(backend: Backend) -> FaultInjector | None:
    """The backend's fault-injection side (only the local twin has one), else ``None``."""
    if isinstance(backend, FaultInjector):
        return backend
    return None
