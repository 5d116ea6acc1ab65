"""``labctl preflight``, ``labctl reset`` and ``labctl participants create|delete``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from labutils.config import lab_target

__all__ = ["register"]


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: its current-context)")


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", choices=("local", "eks"), help="lab target (default: $LAB_TARGET, else local)"
    )


def _print(frame: pd.DataFrame, empty: str) -> None:
    print(empty if frame.empty else frame.to_string(index=False))


def register(subparsers: Any) -> None:
    """Add ``preflight``, ``reset`` and ``participants`` to ``labctl``."""
    pre = subparsers.add_parser("preflight", help="check the target is ready for the lab")
    _target(pre)
    _add_connection(pre)
    pre.add_argument("--namespace", help="lab namespace (default: from manifests/lab.yaml)")
    pre.set_defaults(handler=_preflight)

    reset = subparsers.add_parser(
        "reset", help="delete what the lab created (dry run unless --yes)"
    )
    _target(reset)
    _add_connection(reset)
    scope = reset.add_mutually_exclusive_group()
    scope.add_argument("--namespace", help="lab namespace to reset (default: the lab's)")
    scope.add_argument(
        "--all-participants",
        action="store_true",
        help="reset every namespace labelled app.kubernetes.io/part-of=vllm-lws-lab",
    )
    reset.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    reset.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for deletes")
    reset.add_argument("--state-dir", type=Path, help="local twin state dir (target local)")
    reset.set_defaults(handler=_reset)

    part = subparsers.add_parser("participants", help="per-participant namespaces (EKS)")
    part_sub = part.add_subparsers(dest="participants_command", metavar="ACTION", required=True)
    create = part_sub.add_parser(
        "create",
        help="create N participants: namespace, ServiceAccount + Role, JupyterLab, kubeconfig",
    )
    create.add_argument("count", type=int, help="how many participants")
    create.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the kubeconfigs to hand out (<out>/<namespace>/kubeconfig)",
    )
    create.add_argument(
        "--hours", type=float, default=12.0, help="token validity in hours (default 12, max 48)"
    )
    create.add_argument("--start", type=int, default=1, help="number of the first participant")
    create.add_argument("--config", type=Path, help="lab config (default: manifests/lab.yaml)")
    _add_connection(create)
    create.set_defaults(handler=_participants_create)
    delete = part_sub.add_parser(
        "delete", help="delete every participant namespace (revokes their kubeconfigs)"
    )
    delete.add_argument("--yes", action="store_true", help="really delete (default: dry run)")
    delete.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    delete.add_argument("--out", type=Path, help="also remove <out>/<namespace>/ folders")
    _add_connection(delete)
    delete.set_defaults(handler=_participants_delete)


def _preflight(args: argparse.Namespace) -> int:
    if lab_target(args.target) == "local":
        frame = _local_preflight()
    else:
        from labutils.targets.eks.preflight import preflight

        frame = preflight(args.kubeconfig, args.context, namespace=args.namespace)
    _print(frame, "no checks ran")
    return 0 if bool(frame["ok"].all()) else 1


def _local_preflight() -> pd.DataFrame:
    # the participant's machine checks (Python, cores, memory, HAProxy)
    from labutils.targets.preflight import local_preflight

    return local_preflight()


def _reset(args: argparse.Namespace) -> int:
    if lab_target(args.target) == "local":
        from labutils.targets.twin import TwinBackend

        # None lets the twin pick its default ($LAB_STATE_DIR or the user cache)
        backend = TwinBackend(state_dir=args.state_dir)
        frame = backend.reset(yes=args.yes)
        _print(frame, "local twin: nothing to reset")
        return 0
    from labutils.targets.eks.backend import EksBackend

    eks = EksBackend(args.kubeconfig, args.context, namespace=args.namespace)
    namespaces = eks.lab_namespaces() if args.all_participants else None
    frame = eks.reset(yes=args.yes, namespaces=namespaces, timeout_s=args.timeout)
    _print(frame, "nothing labelled app.kubernetes.io/part-of=vllm-lws-lab to delete")
    return 0


def _participants_create(args: argparse.Namespace) -> int:
    from labutils.config import load_config
    from labutils.targets.eks._connect import connect
    from labutils.targets.eks.participants import create_participants

    conn = connect(args.kubeconfig, args.context)
    config = load_config(args.config) if args.config else None
    frame = create_participants(
        conn, args.count, out_dir=args.out, config=config, hours=args.hours, start=args.start
    )
    _print(frame, "")
    return 0


def _participants_delete(args: argparse.Namespace) -> int:
    from labutils.targets.eks._connect import connect
    from labutils.targets.eks.participants import delete_participants

    conn = connect(args.kubeconfig, args.context)
    frame = delete_participants(conn, yes=args.yes, timeout_s=args.timeout, out_dir=args.out)
    _print(frame, "no participant namespaces")
    return 0
