"""Run many ``labctl`` command lines as separate processes without paying the start-up each time.

Reads ``[{"name", "argv", "env", "out_dir"}]`` as JSON on stdin, imports the CLI once, then forks
one child per case (up to 4 at a time). A child is what ``python -m labutils.cli ARGV`` would
be after its imports: it runs ``labutils.cli.main(argv)`` with its own stdout/stderr files and
exits with its status; an exception escaping ``main`` prints a traceback, as the interpreter
would. Prints ``{name: exit status}`` as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

# This checkout's labutils, not an installed one (the script's folder is sys.path[0]).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from labutils.cli import build_parser, main

_TIMEOUT_S = 90.0


def _child(case: dict) -> None:
    for key in [k for k in os.environ if k.startswith("LAB_")]:
        del os.environ[key]
    os.environ.update(case["env"])
    out = os.open(os.path.join(case["out_dir"], "stdout"), os.O_WRONLY | os.O_CREAT)
    err = os.open(os.path.join(case["out_dir"], "stderr"), os.O_WRONLY | os.O_CREAT)
    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        code = main(case["argv"])
    except SystemExit as exc:  # argparse errors exit(2) like the real program
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(cases: list[dict]) -> dict[str, int]:
    build_parser()  # import every command module once, before forking
    pending = list(cases)
    running: dict[int, tuple[str, float]] = {}
    status: dict[str, int] = {}
    while pending or running:
        while pending and len(running) < 4:
            case = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case)
            running[pid] = (case["name"], time.monotonic())
        for pid, (name, started) in list(running.items()):
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status[name] = os.waitstatus_to_exitcode(raw)
                del running[pid]
            elif time.monotonic() - started > _TIMEOUT_S:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status[name] = -9
                del running[pid]
        time.sleep(0.02)
    return status


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
