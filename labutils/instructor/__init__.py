"""The instructor's side of a workshop on EKS: from an empty AWS account to a room of
participants and back (``labctl instructor plan | cluster-config | addons | teardown``).

:mod:`.plan` sizes it (GPU nodes, vCPU quota, GPU-hours, cost per profile), :mod:`.cluster_config`
renders the eksctl ClusterConfig, :mod:`.addons` installs the pinned add-ons the manifests rely
on, :mod:`.teardown` removes everything in the order that strands no cloud resource. The
commands are registered by :func:`labutils.cli.instructor.register`.
"""

from labutils.instructor.addons import addon_objects, addon_steps
from labutils.instructor.cluster_config import cluster_config, write_cluster_config
from labutils.instructor.plan import ProfilePlan, plan_workshop
from labutils.instructor.teardown import teardown_steps

__all__ = [
    "ProfilePlan",
    "addon_objects",
    "addon_steps",
    "cluster_config",
    "plan_workshop",
    "teardown_steps",
    "write_cluster_config",
]
