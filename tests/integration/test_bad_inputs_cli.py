"""The bad-input catalogue through the real CLI (``python -m labutils.cli``), one case each.

Every case must: exit with the expected non-zero status, end with one ``labctl ...: error:`` line
naming the thing and the fix (argparse's own errors: its usage line plus one error line), show
no traceback, and leave nothing half-made (an output folder that must not exist, a twin state
without processes). The catalogue with the other cases' tests is ``docs/bad-inputs.md``.

All cases start at once (the interpreter start-up dominates; they are independent), bounded by
a timeout each; the only network use is 127.0.0.1 (a closed port and a garbage /metrics server).
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from labutils.config import project_root
from labutils.manifests import render

_TIMEOUT_S = 100


@dataclass
class Case:
    argv: list[str]
    exit_code: int
    message: str  # regex the error line must match
    must_not_exist: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    argparse_error: bool = False
    detail: str = ""  # regex the findings printed before the error line must match


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _GarbageMetrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>not metrics{{{\nvllm:num_requests_waiting{ 12abc\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def garbage_metrics_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbageMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_LAB_VARIANTS = {
    "unknown-zone": ("route_weights: {}", "route_weights: {us-east-9z: 3}"),
    "neg": ("route_weights: {}", "route_weights: {us-west-2a: -5}"),
    "huge": ("route_weights: {}", "route_weights: {us-west-2b: 99999999}"),
    "many": (
        "zones: [us-west-2a, us-west-2b, us-west-2c]",
        "zones: [" + ", ".join(f"z{i}" for i in range(17)) + "]",
    ),
    "minmax": ("min_replicas: 1", "min_replicas: 6"),
    "tp8": ("tensor_parallel_size: 4", "tensor_parallel_size: 8"),
    "tp3": ("tensor_parallel_size: 4", "tensor_parallel_size: 3"),
}


def _lab_yaml(tmp: Path, name: str) -> Path:
    return tmp / f"{name}.yaml"


def _edit_leader_args(lws_file: Path, flag: str, value: str) -> None:
    lws = yaml.safe_load(lws_file.read_text())
    args = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["args"]
    args[args.index(flag) + 1] = value
    lws_file.write_text(yaml.safe_dump(lws, sort_keys=False))


def _prepare(tmp: Path) -> None:
    """Write every bad input the cases point at."""
    text = (project_root() / "manifests" / "lab.yaml").read_text()
    for name, (old, new) in _LAB_VARIANTS.items():
        assert old in text, old
        _lab_yaml(tmp, name).write_text(text.replace(old, new))
    (tmp / "truncated-lab.yaml").write_text(
        "namespace: vllm-lab\nzones: [us-west-2a,\nmodel: meta-llama/Llama-3"
    )
    (tmp / "truncated-service.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  labels: {a: [\n"
    )
    (tmp / "a-file").write_text("not a folder\n")
    for name in ("bad-args", "tp-pp", "keda-and-hpa"):
        render(out_dir=tmp / name)
    _edit_leader_args(tmp / "bad-args/zones/us-west-2b/lws.yaml", "--max-num-seqs", "lots")
    _edit_leader_args(tmp / "tp-pp/zones/us-west-2a/lws.yaml", "--pipeline-parallel-size", "4")
    keda = tmp / "keda-and-hpa"
    (keda / "zones/us-west-2a/scaledobject.yaml").write_text(
        (keda / "optional/keda/scaledobject-us-west-2a.yaml").read_text()
    )
    (tmp / "kubeconfig-list.yaml").write_text("- just\n- a list\n")
    (tmp / "kubeconfig-truncated.yaml").write_text(
        "apiVersion: v1\nclusters:\n- cluster: {server: https://127.0.0.1:1\n"
    )
    half_dead = tmp / "half-dead-state"
    (half_dead / "logs").mkdir(parents=True)
    (half_dead / "state.json").write_text('{"controller": {"pid": 1, "create_ti')  # cut off
    # A controller that is gone: its PID recorded, the process exited.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp / "stale-state"
    (stale / "logs").mkdir(parents=True)
    record = {"pid": int(dead.stdout), "create_time": 1.0, "role": "controller"}
    (stale / "controller.json").write_text(json.dumps(record))
    state = {"controller": record, "processes": [], "control_url": "http://127.0.0.1:1"}
    (stale / "state.json").write_text(json.dumps(state))


def _cases(tmp: Path, metrics_url: str, closed: str) -> dict[str, Case]:
    out = tmp / "out"  # every failing render targets this folder, which must stay absent
    trunc, trunc_svc = tmp / "truncated-lab.yaml", tmp / "truncated-service.yaml"
    a_file = tmp / "a-file"
    bad_args, tpxpp, keda = tmp / "bad-args", tmp / "tp-pp", tmp / "keda-and-hpa"
    bad_kube, truncated_kube = tmp / "kubeconfig-list.yaml", tmp / "kubeconfig-truncated.yaml"
    half_dead, stale = tmp / "half-dead-state", tmp / "stale-state"
    lt = ["loadtest", "--url", closed, "--model", "m", "--no-progress"]
    hf = "meta-llama/Llama-3.1-70B-Instruct"
    return {
        # --- lab.yaml and render
        "render: truncated lab.yaml": Case(
            ["render", "--out", str(out), "--config", str(trunc)], 2,
            r"truncated-lab\.yaml:\d+: not valid YAML", [out]),
        "render: unknown zone in route_weights": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "unknown-zone"))], 2,
            r"route_weights name zone\(s\) \['us-east-9z'\] that are not in zones", [out]),
        "render: negative weight": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "neg"))],
            2, r"route_weights\[us-west-2a\] must be in 0\.\.1000000", [out]),
        "render: huge weight": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "huge"))],
            2, r"route_weights\[us-west-2b\] must be in 0\.\.1000000", [out]),
        "render: 17 zones > 16 backendRefs": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "many"))],
            2, r"1\.\.16 zones \(HTTPRoute backendRefs limit\)", [out]),
        "render: HPA min > max": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "minmax"))],
            2, r"need min_replicas <= replicas <= max_replicas.*got 6 / 2 / 4", [out]),
        "render: TP larger than a node": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "tp8"))],
            2, r"tensor_parallel_size=8 but g5\.12xlarge has 4 GPUs.*raise pipeline_parallel_size",
            [out]),
        "render: TP not dividing the heads": Case(
            ["render", "--out", str(out), "--config",
             str(_lab_yaml(tmp, "tp3"))],
            2, r"tensor_parallel_size=3 does not divide the 64 attention heads.*\[1, 2, 4\]",
            [out]),
        "render: --out is a file": Case(
            ["render", "--out", str(a_file)], 2, r"--out .*a-file is a file; pass a folder"),
        # --- validate and scan
        "validate: truncated manifest": Case(
            ["validate", str(trunc_svc)], 1, r"1 problem\(s\) in the manifests",
            detail=r"truncated-service\.yaml:6: .*not valid YAML.*fix the syntax there"),
        "validate: missing folder": Case(
            ["validate", str(tmp / "nowhere")], 1, r"nowhere: no such file or folder"),
        "validate: bad vllm serve arg": Case(
            ["validate", str(bad_args)], 1, r"bad-args: 1 problem\(s\)",
            detail=r"us-west-2b/lws\.yaml:\d+: .*--max-num-seqs: invalid int value: 'lots'"),
        "validate: TP x PP mismatch": Case(
            ["validate", str(tpxpp)], 1, r"tp-pp: 2 problem\(s\)",
            detail=r"lws\.yaml:\d+: .*TP x PP = 4 x 4 = 16 but size x GPUs per pod = 2 x 4 = 8"),
        "validate: KEDA and HPA on one LWS": Case(
            ["validate", str(keda)], 1, r"keda-and-hpa: 1 problem\(s\)",
            detail=r"scaledobject\.yaml:\d+: .*also scaled by HPA .*never apply both"),
        "scan: missing folder": Case(
            ["scan", str(tmp / "nowhere")], 2, r"no such file or folder; render first"),
        "scan: truncated YAML": Case(
            ["scan", str(trunc_svc)], 2, r"truncated-service\.yaml: not valid YAML"),
        # --- load tests and monitoring
        "loadtest: rate 0": Case([*lt, "--rate", "0", "--requests", "5"], 1,
                                 r"rate_rps=0\.0: give a positive request rate"),
        "loadtest: negative rate": Case([*lt, "--rate", "-2", "--requests", "5"], 1,
                                        r"rate_rps=-2\.0: give a positive request rate"),
        "loadtest: concurrency 0": Case([*lt, "--concurrency", "0", "--requests", "5"], 1,
                                        r"concurrency=0: give at least 1 concurrent user"),
        "loadtest: unbounded (no --requests/--duration)": Case(
            [*lt, "--rate", "5"], 1, r"unbounded load: give --duration S, --requests N"),
        "loadtest: rate not a number": Case([*lt, "--rate", "abc", "--requests", "3"], 1,
                                            r"--rate 'abc': give a number"),
        "loadtest: not a URL": Case(
            ["loadtest", "--url", "notaurl", "--model", "m", "--rate", "5", "--requests", "3"],
            1, r"--url 'notaurl' is not an http\(s\) URL"),
        "loadtest: --out in a missing folder": Case(
            [*lt, "--rate", "5", "--requests", "3", "--out", str(tmp / "no/dir/r.json")], 1,
            r"folder .*no/dir does not exist; create it first", [tmp / "no"]),
        "loadtest: unreachable endpoint": Case(
            [*lt, "--rate", "20", "--requests", "3", "--out", str(tmp / "unreachable.json")], 1,
            r"no request succeeded against http://127\.0\.0\.1:\d+ .*check the URL"),
        "monitor: unreachable endpoint": Case(
            ["monitor", "--url", closed, "--duration", "1", "--interval", "0.5",
             "--no-progress", "--out", str(tmp / "mon-unreachable.csv")], 1,
            r"every scrape failed; first: GET http://127\.0\.0\.1:\d+/metrics",
            [tmp / "mon-unreachable.csv"]),
        "monitor: garbage /metrics": Case(
            ["monitor", "--url", metrics_url, "--duration", "1", "--interval", "0.5",
             "--no-progress", "--out", str(tmp / "mon-garbage.csv")], 1,
            r"/metrics of 127\.0\.0\.1:\d+ .*not Prometheus text format",
            [tmp / "mon-garbage.csv"]),
        "monitor: interval 0": Case(
            ["monitor", "--url", closed, "--duration", "0", "--interval", "0"], 1,
            r"interval_s=0\.0, duration_s=0\.0: both must be > 0"),
        # --- CLI syntax and targets
        "cli: unknown command": Case(["deploy"], 2, r"invalid choice: 'deploy'",
                                     argparse_error=True),
        "cli: unknown --target": Case(["reset", "--target", "gke"], 2,
                                      r"--target: invalid choice: 'gke'", argparse_error=True),
        "cli: LAB_TARGET unknown": Case(["preflight"], 2,
                                        r"LAB_TARGET='gke' is not a target; choose one of",
                                        env={"LAB_TARGET": "gke"}),
        "cli: missing required flag": Case(["loadtest", "--url", closed], 2,
                                           r"the following arguments are required: --model",
                                           argparse_error=True),
        # --- cluster connection
        "eks: kubeconfig missing": Case(
            ["preflight", "--target", "eks", "--kubeconfig", str(tmp / "nokube")], 1,
            r"kubeconfig .*nokube not found; .*aws eks update-kubeconfig"),
        "eks: kubeconfig not a mapping": Case(
            ["preflight", "--target", "eks", "--kubeconfig", str(bad_kube)], 1,
            r"kubeconfig-list\.yaml is not valid .*regenerate it"),
        "eks: kubeconfig truncated": Case(
            ["preflight", "--target", "eks", "--kubeconfig", str(truncated_kube)], 1,
            r"kubeconfig-truncated\.yaml is not valid .*regenerate it"),
        # --- simulator configuration (refused before binding a port)
        "sim: unknown model": Case(["sim", "serve", "acme/nope-7b", "--port", "0"], 1,
                                   r"unknown model 'acme/nope-7b'; choose one of"),
        "sim: TP not dividing heads": Case(
            ["sim", "serve", hf, "--tensor-parallel-size", "3", "--port", "0"], 1,
            r"attention heads \(64\) must be divisible by tensor parallel size \(3\)"),
        "sim: --max-num-seqs -1": Case(
            ["sim", "serve", hf, "--max-num-seqs", "-1", "--port", "0"], 1,
            r"--max-num-seqs must be >= 1, got -1"),
        # --- twin state
        "twin: status with no twin": Case(
            ["twin", "status", "--state-dir", str(tmp / "no-state")], 1,
            r"no twin running in .*no-state; start it with 'labctl twin up'"),
        "twin: half-written state.json": Case(
            ["twin", "status", "--state-dir", str(half_dead)], 1, r"no twin running in"),
        "twin: state of a dead controller": Case(
            ["twin", "fail", "--state-dir", str(stale), "--zone", "us-east-9z"], 1,
            r"no twin running in .*stale-state"),
        "twin: up without rendered manifests": Case(
            ["twin", "up", "--state-dir", str(tmp / "st-up"), "--manifests",
             str(tmp / "nowhere")], 1,
            r"nowhere: rendered manifests folder not found; run 'labctl render'",
            [tmp / "st-up/state.json", tmp / "st-up/controller.json"]),
        # --- other commands
        "lab run: unknown notebook": Case(
            ["lab", "run", "99-nope.ipynb", "--out", str(tmp / "reports")], 2,
            r"notebook 99-nope\.ipynb not found; choose one of", [tmp / "reports"]),
        "plan: missing rendered folder": Case(
            ["plan", "--rendered", str(tmp / "nowhere")], 1,
            r"nowhere: not a folder of rendered manifests"),
        "realengine: --replicas 9": Case(
            ["realengine", "serve", "--replicas", "9"], 2, r"--replicas 9: choose 1, 2 or 3"),
        "sizing: unknown model": Case(["sizing", "candidates", "acme/nope"], 2,
                                      r"unknown model 'acme/nope'; choose one of"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, garbage_metrics_url: str
) -> dict[str, tuple[Case, subprocess.CompletedProcess[str]]]:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    _prepare(tmp)
    cases = _cases(tmp, garbage_metrics_url, f"http://127.0.0.1:{_closed_port()}")
    batch = []
    for i, (name, case) in enumerate(cases.items()):
        out_dir = tmp / "runs" / str(i)
        out_dir.mkdir(parents=True)
        batch.append({"name": name, "argv": case.argv, "env": case.env, "out_dir": str(out_dir)})
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("bad_inputs_runner.py"))],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        cwd=project_root(),
        timeout=_TIMEOUT_S * 3,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    done = {}
    for item in batch:
        out_dir = Path(item["out_dir"])
        done[item["name"]] = (
            cases[item["name"]],
            subprocess.CompletedProcess(
                item["argv"],
                status[item["name"]],
                (out_dir / "stdout").read_text(),
                (out_dir / "stderr").read_text(),
            ),
        )
    return done


def test_runner_matches_the_real_entry_point(tmp_path: Path) -> None:
    # The runner's children behave like `python -m labutils.cli`: same status, same error line.
    argv = ["render", "--out", str(tmp_path / "x"), "--config", str(tmp_path / "missing.yaml")]
    real = subprocess.run(
        [sys.executable, "-m", "labutils.cli", *argv],
        capture_output=True, text=True, cwd=project_root(), timeout=_TIMEOUT_S, check=False,
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    batch = [{"name": "x", "argv": argv, "env": {}, "out_dir": str(tmp_path / "run")}]
    runner = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("bad_inputs_runner.py"))],
        input=json.dumps(batch), capture_output=True, text=True, cwd=project_root(),
        timeout=_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert json.loads(runner.stdout) == {"x": real.returncode} and real.returncode == 2
    assert (tmp_path / "run" / "stderr").read_text() == real.stderr


def test_catalogue_is_large_enough(
    results: dict[str, tuple[Case, subprocess.CompletedProcess[str]]],
) -> None:
    assert len(results) >= 25
    doc = (project_root() / "docs" / "bad-inputs.md").read_text()
    missing = [name for name in results if f"`{name}`" not in doc]
    assert not missing, f"add these cases to docs/bad-inputs.md: {missing}"


_NAMES = sorted(_cases(Path("/collect-only"), "http://127.0.0.1:1", "http://127.0.0.1:1"))


@pytest.mark.parametrize("name", _NAMES)
def test_bad_input_gives_one_clear_line(
    name: str, results: dict[str, tuple[Case, subprocess.CompletedProcess[str]]]
) -> None:
    case, proc = results[name]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == case.exit_code, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # Progress bars go to stderr with \r; the error is the last line.
    error = lines[-1].split("\r")[-1].strip() if lines else ""
    if case.argparse_error:
        assert error.startswith("labctl") and ": error: " in error, output
    else:
        assert re.match(r"labctl [a-z-]+: error: ", error), output
        assert sum(": error: " in line for line in lines) == 1, output
    assert re.search(case.message, error), f"{error!r} does not match {case.message!r}"
    assert re.search(case.detail, output), f"findings do not match {case.detail!r}: {output}"
    for path in case.must_not_exist:
        assert not path.exists(), f"{name} left {path} behind"
