"""``labctl twin up|status|down|fail|restore``: the local twin from the command line."""

from __future__ import annotations

import argparse
import json
import shlex

from labutils.targets.twin.backend import FAULT_MODES, TwinBackend
from labutils.targets.twin.haproxy import STRATEGIES

__all__ = ["register"]


def _backend(args: argparse.Namespace) -> TwinBackend:
    engine: str | list[str] = (
        args.engine if args.engine in ("sim", "vllm") else shlex.split(args.engine)
    )
    return TwinBackend(
        args.state_dir,
        strategy=getattr(args, "strategy", "weighted"),
        engine=engine,
        model_load_s=getattr(args, "model_load_s", None),
        sync_period_s=getattr(args, "sync_period_s", 15.0),
        downscale_stabilization_s=getattr(args, "downscale_stabilization_s", 300.0),
        time_scale=getattr(args, "time_scale", 1.0),
        scrape_interval_s=getattr(args, "scrape_interval_s", None),
    )


def _up(args: argparse.Namespace) -> int:
    twin = _backend(args)
    status = twin.up(args.manifests, timeout_s=args.timeout_s)
    ends = twin.endpoints()
    print(status.to_string(index=False))
    print(f"gateway: {ends.gateway_url}  (model {ends.model}, strategy {args.strategy})")
    for zone, url in ends.zone_urls.items():
        print(f"zone {zone}: {url}")
    for group in ends.groups:
        print(f"group {group.group}: {group.url}")
    if args.wait_scraped:
        twin.wait_scraped(timeout_s=args.timeout_s)
        print(f"prometheus: {twin.prometheus_url}  (every ready leader scraped: "
              f"{twin.prometheus_url}/targets)")  # fmt: skip
    else:
        print(f"prometheus: {twin.prometheus_url}")
    return 0


def _status(args: argparse.Namespace) -> int:
    twin = _backend(args)
    if args.json:
        body = {
            "lws": twin.status().to_dict(orient="records"),
            "groups": twin.groups().to_dict(orient="records"),
            "gateway_url": twin.endpoints().gateway_url,
            "prometheus_url": twin.prometheus_url,
        }
        print(json.dumps(body, indent=1, default=str))
    else:
        print(twin.status().to_string(index=False))
        print(twin.groups().to_string(index=False))
        print(f"gateway: {twin.endpoints().gateway_url}")
        print(f"prometheus: {twin.prometheus_url}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = _backend(args).down()
    print(f"stopped {len(stopped)} process(es)" if stopped else "nothing was running")
    return 0


def _fail(args: argparse.Namespace) -> int:
    groups = _backend(args).fail(zone=args.zone, group=args.group, mode=args.mode)
    print(f"{args.mode}: {', '.join(groups)}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    groups = _backend(args).restore(zone=args.zone, group=args.group)
    print(f"restored: {', '.join(groups)}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``twin`` and its subcommands to ``labctl``."""
    twin = subparsers.add_parser("twin", help="run the lab locally (simulated engines + HAProxy)")
    sub = twin.add_subparsers(dest="twin_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", help="where the twin records its processes (default: "
                       "$LAB_STATE_DIR or the user cache dir)")  # fmt: skip
        p.add_argument(
            "--engine",
            default="sim",
            help="'sim', 'vllm' (real vLLM CPU build) or an engine command prefix",
        )

    up = sub.add_parser("up", help="start (or keep) the twin from the rendered manifests")
    common(up)
    up.add_argument("--manifests", help="rendered manifests folder (default: <project>/rendered)")
    up.add_argument("--strategy", choices=STRATEGIES, default="weighted")
    up.add_argument(
        "--model-load-s",
        type=float,
        default=None,
        help="simulated model-load time of every group (default: seconds for the first "
        "groups; added ones: a GPU group's start time x --time-scale)",
    )
    up.add_argument("--sync-period-s", type=float, default=15.0)
    up.add_argument("--downscale-stabilization-s", type=float, default=300.0)
    up.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply health-check, scrape and alert intervals and added groups' "
                         "start times (e.g. 0.2 for fast drills)")  # fmt: skip
    up.add_argument("--scrape-interval-s", type=float, default=None,
                    help="Prometheus scrape/rule interval (default: the PodMonitor's interval "
                         "x --time-scale)")  # fmt: skip
    up.add_argument(
        "--no-wait-scraped",
        dest="wait_scraped",
        action="store_false",
        help="return when the groups are ready, before Prometheus scraped them",
    )
    up.add_argument("--timeout-s", type=float, default=120.0)
    up.set_defaults(handler=_up)

    status = sub.add_parser("status", help="LWS and group status")
    common(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    down = sub.add_parser("down", help="stop everything the twin started")
    common(down)
    down.set_defaults(handler=_down)

    for name, handler in (("fail", _fail), ("restore", _restore)):
        p = sub.add_parser(name, help=f"{name} a zone or a group")
        common(p)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--zone")
        target.add_argument("--group")
        if name == "fail":
            p.add_argument("--mode", choices=FAULT_MODES, default="kill")
        p.set_defaults(handler=handler)
