"""A stateful fake Kubernetes API server for the EKS-path tests (see :mod:`.server`)."""

from .server import FakeKube

__all__ = ["FakeKube"]
