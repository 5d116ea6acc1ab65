"""The lab's error hierarchy.

Every expected failure raises a subclass of :class:`LabError` whose message is one line that
names the thing (file:line, URL, object) and says how to fix it. The CLI prints that line and
exits non-zero; it never shows a traceback for a ``LabError``.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ConfigError",
    "EndpointError",
    "LabError",
    "LoadTestError",
    "ManifestError",
    "MetricsError",
    "SimulatorError",
    "TwinError",
    "ValidationError",
    "WaitTimeout",
]


class LabError(Exception):
    """Base class of every expected failure in the lab."""

    exit_code: int = 1


class ConfigError(LabError):
    """A lab setting (file, environment variable, CLI flag) is invalid."""

    exit_code = 2


class ManifestError(LabError):
    """A manifest cannot be read or rendered (bad YAML, missing file)."""


class ValidationError(LabError):
    """Manifests failed validation; ``problems`` holds one line per finding."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SimulatorError(LabError):
    """The simulated engine refused a configuration (as ``vllm serve`` would)."""


class TwinError(LabError):
    """The local twin could not start, stop or change as asked."""


class ClusterError(LabError):
    """A Kubernetes API call failed (unreachable, forbidden, missing CRD, conflict)."""


class WaitTimeout(LabError):
    """A wait ran out of time; the message names the object and its last status."""


class EndpointError(LabError):
    """An HTTP endpoint could not be reached or answered unexpectedly."""


class MetricsError(LabError):
    """A metrics scrape or query failed, or an expected series is missing."""


class LoadTestError(LabError):
    """A load test was asked for with invalid or unbounded parameters."""
