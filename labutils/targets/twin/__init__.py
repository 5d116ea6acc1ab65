"""The local twin: per-zone LWS groups of simulated engines, HAProxy as gateway, an HPA loop.

Public surface: :class:`TwinBackend` (the ``local`` :class:`~labutils.protocol.Backend`, plus
``up``/``down``/``fail``/``restore``/``hpa_events``) and :func:`load_twin_spec`.
"""

from labutils.targets.twin.backend import FAULT_MODES, TwinBackend
from labutils.targets.twin.haproxy import STRATEGIES
from labutils.targets.twin.spec import TwinSpec, load_twin_spec

__all__ = ["FAULT_MODES", "STRATEGIES", "TwinBackend", "TwinSpec", "load_twin_spec"]
