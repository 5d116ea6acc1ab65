"""``labctl instructor plan | cluster-config | addons | teardown``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.config import LabConfig, load_config, manifests_dir

__all__ = ["register"]


def _config(args: argparse.Namespace) -> tuple[LabConfig, Path]:
    source = Path(args.source) if args.source else manifests_dir()
    return load_config(args.config or source / "lab.yaml"), source


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="lab config (default: <source>/lab.yaml)")
    parser.add_argument("--source", type=Path, help="source manifests (default: manifests/)")


def register(subparsers: Any) -> None:
    """Add ``labctl instructor`` and its subcommands."""
    inst = subparsers.add_parser("instructor", help="plan, create and tear down the EKS workshop")
    sub = inst.add_subparsers(dest="instructor_command", metavar="ACTION", required=True)

    plan = sub.add_parser("plan", help="GPU nodes, vCPU quota, GPU-hours and cost per profile")
    plan.add_argument("--participants", type=int, required=True, help="how many participants")
    plan.add_argument("--hours", type=float, required=True, help="workshop length in hours")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _common(plan)
    plan.set_defaults(handler=_plan)

    cluster = sub.add_parser("cluster-config", help="write the eksctl ClusterConfig")
    cluster.add_argument("--out", type=Path, required=True, help="file to write (YAML)")
    cluster.add_argument("--participants", type=int, help="room size (default: lab.yaml)")
    _common(cluster)
    cluster.set_defaults(handler=_cluster_config)

    addons = sub.add_parser("addons", help="install the pinned add-ons the manifests rely on")
    mode = addons.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", action="store_true", help="print the commands")
    mode.add_argument("--apply", action="store_true", help="run them (helm, kubectl, aws)")
    _common(addons)
    addons.set_defaults(handler=_addons)

    teardown = sub.add_parser("teardown", help="remove the workshop (dry run unless --yes)")
    teardown.add_argument("--yes", action="store_true", help="really run it")
    _common(teardown)
    teardown.set_defaults(handler=_teardown)


def _plan(args: argparse.Namespace) -> int:
    from labutils.instructor.plan import plan_workshop

    config, source = _config(args)
    plans = plan_workshop(args.participants, args.hours, config=config, source=source)
    from labutils.manifests.settings import cluster_settings

    selected = cluster_settings(config).profile
    if args.json:
        print(
            json.dumps(
                {"selected": selected, "profiles": {k: v.to_dict() for k, v in plans.items()}},
                indent=2,
            )
        )
        return 0
    for name, plan in plans.items():
        mark = " (selected in lab.yaml)" if name == selected else ""
        print(f"== {name}{mark}: {plan.fleets} fleet(s) of {plan.model} on {plan.instance_type}")
        print(pd.DataFrame([z.__dict__ for z in plan.zones]).to_string(index=False))
        print(
            f"quota to request: {plan.quota['name']} ({plan.quota['code']}) >= "
            f"{plan.quota['vcpus']} vCPUs; GPU-hours {plan.gpu_hours:g} (max "
            f"{plan.max_gpu_hours:g}); NLBs {plan.nlbs}"
        )
        items = pd.DataFrame(list(plan.line_items))[
            ["item", "quantity", "unit", "usd_per_unit", "usd", "as_of"]
        ]
        print(items.to_string(index=False))
        print(
            f"cost: ${plan.cost_usd:,.2f} at the baseline, ${plan.max_cost_usd:,.2f} at the "
            "HPA maximum (prices: labutils/data/prices.yaml, each with its source)"
        )
        for note in plan.warnings:
            print(f"warning: {note}")
        print()
    return 0


def _cluster_config(args: argparse.Namespace) -> int:
    from labutils.instructor.cluster_config import prerequisite_commands, write_cluster_config

    config, _ = _config(args)
    path = write_cluster_config(config, args.out, participants=args.participants)
    print(f"wrote {path}; create the cluster with:")
    for command in prerequisite_commands(config):
        print(f"  {command}")
    print(f"  envsubst < {path} | eksctl create cluster -f -")
    return 0


def _addons(args: argparse.Namespace) -> int:
    from labutils.instructor.addons import _check_apply, addon_steps, apply_steps, format_steps

    config, source = _config(args)
    steps = addon_steps(config, source)
    if args.print:
        print(format_steps(steps))
        return 0
    _check_apply(config)
    for name in apply_steps(steps):
        print(f"installed {name}")
    return 0


def _teardown(args: argparse.Namespace) -> int:
    from labutils.instructor.addons import apply_steps, format_steps
    from labutils.instructor.teardown import teardown_steps

    config, _ = _config(args)
    steps = teardown_steps(config)
    if not args.yes:
        print("# dry run: these run in this order with --yes")
        print(format_steps(steps))
        return 0
    for name in apply_steps(steps):
        print(f"done: {name}")
    return 0
