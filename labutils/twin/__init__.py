"""The local twin: per-zone LWS groups of simulated engines, HAProxy as gateway, an HPA loop.

Public surface: :class:`TwinBackend` (the ``local`` :class:`~labutils.backend.Backend`, plus
``up``/``down``/``fail``/``restore``/``hpa_events``) and :func:`load_twin_spec`.
"""

from labutils.twin.backend import FAULT_MODES, TwinBackend
from labutils.twin.haproxy import STRATEGIES
from labutils.twin.spec import TwinSpec, load_twin_spec

__all__ = ["FAULT_MODES", "STRATEGIES", "TwinBackend", "TwinSpec", "load_twin_spec"]
