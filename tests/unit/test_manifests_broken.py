"""`labctl validate` on broken manifests: exit 1 and a message naming file:line and the field.

Each case renders the lab once (module fixture), copies the output, breaks one thing the way a
participant or an old tutorial would, and runs the real CLI on the folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from labutils.cli import main
from labutils.manifests import render, validate

ZONE = "zones/us-west-2a"


@dataclass(frozen=True)
class Case:
    """Break ``file`` by replacing ``old`` (first occurrence) with ``new``; expect a problem
    in ``report`` (default ``file``) at the first line equal to ``at``, whose text contains
    ``field`` and ``message``."""

    id: str
    file: str
    old: str
    new: str
    at: str
    field: str
    message: str
    report: str | None = None
    extra: Callable[[Path], None] | None = None
    nth: int = 0  # which occurrence of ``at`` (0 = first)


def _copy_keda(root: Path) -> None:
    src = root / "optional/keda/scaledobject-us-west-2a.yaml"
    shutil.copy(src, root / ZONE / "scaledobject.yaml")


CASES = [
    Case(
        "missing-part-of-label",
        f"{ZONE}/lws.yaml",
        "\n    app.kubernetes.io/part-of: vllm-lws-lab\n",
        "\n",
        "  labels:",
        'metadata.labels["app.kubernetes.io/part-of"]',
        "label app.kubernetes.io/part-of",
    ),
    Case(
        "affinity-wrong-zone",
        f"{ZONE}/lws.yaml",
        "                  - us-west-2a",
        "                  - us-west-2b",
        "          nodeAffinity:",
        "leaderTemplate.spec.affinity.nodeAffinity",
        "this is the us-west-2a overlay",
    ),
    Case(
        "cuda-visible-devices",
        f"{ZONE}/lws.yaml",
        "          env:\n",
        "          env:\n          - name: CUDA_VISIBLE_DEVICES\n            value: '0'\n",
        "          - name: CUDA_VISIBLE_DEVICES",
        "containers[0].env[0]",
        "do not set CUDA_VISIBLE_DEVICES",
    ),
    Case(
        "tp-times-pp-not-size-times-gpus",
        f"{ZONE}/lws.yaml",
        "          - --pipeline-parallel-size\n          - '2'",
        "          - --pipeline-parallel-size\n          - '4'",
        "          - --tensor-parallel-size",
        "leaderTemplate.spec.containers[0].args[3]",
        "TP x PP = 4 x 4 = 16 but size x GPUs per pod = 2 x 4 = 8",
    ),
    Case(
        "no-dev-shm",
        f"{ZONE}/lws.yaml",
        "          - name: dshm\n            mountPath: /dev/shm\n",
        "",
        "        volumes:",
        "leaderTemplate.spec.volumes",
        "/dev/shm",
    ),
    Case(
        "readiness-probe-path",
        f"{ZONE}/lws.yaml",
        "readinessProbe:\n            httpGet:\n              path: /health",
        "readinessProbe:\n            httpGet:\n              path: /ready",
        "              path: /ready",
        "readinessProbe.httpGet.path",
        "probe path must be /health",
    ),
    Case(
        "restart-policy",
        f"{ZONE}/lws.yaml",
        "restartPolicy: RecreateGroupAfterStart",
        "restartPolicy: None",
        "    restartPolicy: None",
        "leaderWorkerTemplate.restartPolicy",
        "must be RecreateGroupAfterStart",
    ),
    Case(
        "ancient-image",
        f"{ZONE}/lws.yaml",
        "image: vllm/vllm-openai:v0.32.0",
        "image: vllm/vllm-openai:v0.2.7",
        "          image: vllm/vllm-openai:v0.2.7",
        "leaderTemplate.spec.containers[0].image",
        "years old",
    ),
    Case(
        "unpinned-image",
        f"{ZONE}/lws.yaml",
        "image: vllm/vllm-openai:v0.32.0",
        "image: vllm/vllm-openai:latest",
        "          image: vllm/vllm-openai:latest",
        "containers[0].image",
        "pin a release tag",
    ),
    Case(
        "deprecated-entrypoint",
        f"{ZONE}/lws.yaml",
        "          - vllm\n          - serve\n",
        "          - python\n          - -m\n          - vllm.entrypoints.openai.api_server\n",
        "          command:",
        "leaderTemplate.spec.containers[0].command",
        "deprecated",
    ),
    Case(
        "leader-ready-deadlock",
        f"{ZONE}/lws.yaml",
        "startupPolicy: LeaderCreated",
        "startupPolicy: LeaderReady",
        "  startupPolicy: LeaderReady",
        "spec.startupPolicy",
        "deadlocks",
    ),
    Case(
        "worker-not-headless",
        f"{ZONE}/lws.yaml",
        "          - --headless\n",
        "",
        "          args:",
        "workerTemplate.spec.containers[0].args",
        "--headless",
        nth=1,
    ),
    Case(
        "api-key-in-args",
        f"{ZONE}/lws.yaml",
        "          - --served-model-name\n",
        "          - --api-key\n          - not-a-real-key\n          - --served-model-name\n",
        "          - --api-key",
        "leaderTemplate.spec.containers[0].args[1]",
        "never put the API key in args",
    ),
    Case(
        "unknown-pod-field",
        f"{ZONE}/lws.yaml",
        "automountServiceAccountToken: false",
        "automountServiceAccountTokn: false",
        "        automountServiceAccountTokn: false",
        "automountServiceAccountTokn",
        "unknown field",
    ),
    Case(
        "no-gpu-toleration",
        f"{ZONE}/lws.yaml",
        "        tolerations:\n        - key: nvidia.com/gpu\n          operator: Exists\n"
        "          effect: NoSchedule\n",
        "",
        "      spec:",
        "leaderTemplate.spec.tolerations",
        "toleration",
    ),
    Case(
        "service-selects-workers",
        f"{ZONE}/service.yaml",
        "    leaderworkerset.sigs.k8s.io/worker-index: '0'\n",
        "",
        "  selector:",
        "spec.selector",
        "worker pods",
    ),
    Case(
        "nlb-nonexistent-threshold-key",
        f"{ZONE}/service.yaml",
        "aws-load-balancer-healthcheck-healthy-threshold",
        "aws-load-balancer-healthy-threshold",
        "    service.beta.kubernetes.io/aws-load-balancer-healthy-threshold: '2'",
        "aws-load-balancer-healthy-threshold",
        "not an AWS Load Balancer Controller annotation",
    ),
    Case(
        "nlb-interval-out-of-range",
        f"{ZONE}/service.yaml",
        "healthcheck-interval: '10'",
        "healthcheck-interval: '3'",
        "    service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval: '3'",
        "aws-load-balancer-healthcheck-interval",
        "outside the NLB range 5..300",
    ),
    Case(
        "nlb-health-path",
        f"{ZONE}/service.yaml",
        "healthcheck-path: /health",
        "healthcheck-path: /",
        "    service.beta.kubernetes.io/aws-load-balancer-healthcheck-path: /",
        "aws-load-balancer-healthcheck-path",
        "must be '/health'",
    ),
    Case(
        "duplicate-key",
        f"{ZONE}/service.yaml",
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  type: ClusterIP\n",
        "  type: ClusterIP",
        "spec.type",
        "written twice",
    ),
    Case(
        "route-to-missing-service",
        "gateway/httproute.yaml",
        "name: vllm-us-west-2c-api",
        "name: vllm-us-west-2d-api",
        "      name: vllm-us-west-2d-api",
        "spec.rules[0].backendRefs[2].name",
        "HTTP 500",
    ),
    Case(
        "route-weight-out-of-range",
        "gateway/httproute.yaml",
        "weight: 1\n",
        "weight: 2000000\n",
        "      weight: 2000000",
        "spec.rules[0].backendRefs[0].weight",
        "maximum",
    ),
    Case(
        "route-v1beta1",
        "gateway/httproute.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\n",
        "apiVersion: gateway.networking.k8s.io/v1beta1\n",
        "apiVersion: gateway.networking.k8s.io/v1beta1",
        "apiVersion",
        "use 'gateway.networking.k8s.io/v1'",
    ),
    Case(
        "hpa-target-missing",
        f"{ZONE}/hpa.yaml",
        "    name: vllm-us-west-2a\n  minReplicas",
        "    name: vllm-us-west-2x\n  minReplicas",
        "    name: vllm-us-west-2x",
        "spec.scaleTargetRef.name",
        "does not exist",
    ),
    Case(
        "hpa-cpu-utilisation",
        f"{ZONE}/hpa.yaml",
        "  - type: Pods\n    pods:\n      metric:\n        name: vllm_num_requests_waiting\n"
        "      target:\n        type: AverageValue\n        averageValue: '5'\n",
        "  - type: Resource\n    resource:\n      name: cpu\n      target:\n"
        "        type: Utilization\n        averageUtilization: 70\n",
        "      name: cpu",
        "spec.metrics[0].resource.name",
        "not a GPU-inference signal",
    ),
    Case(
        "hpa-unserved-metric",
        f"{ZONE}/hpa.yaml",
        "name: vllm_num_requests_waiting",
        "name: inference_queue_length",
        "        name: inference_queue_length",
        "spec.metrics[0].pods.metric.name",
        "no prometheus-adapter rule",
    ),
    Case(
        "hpa-min-above-max",
        f"{ZONE}/hpa.yaml",
        "  minReplicas: 1\n",
        "  minReplicas: 9\n",
        "  minReplicas: 9",
        "spec.minReplicas",
        "minReplicas 9 > maxReplicas 4",
    ),
    Case(
        "rwo-model-volume",
        f"{ZONE}/storage.yaml",
        "- ReadWriteMany",
        "- ReadWriteOnce",
        "            claimName: vllm-models-us-west-2a",
        "volumes[0].persistentVolumeClaim.claimName",
        "one RWO volume cannot serve pods on several nodes",
        report=f"{ZONE}/lws.yaml",
    ),
    Case(
        "secret-with-value",
        "cluster/secrets.yaml",
        "type: Opaque\n",
        "type: Opaque\nstringData:\n  api-key: not-a-real-key\n",
        "stringData:",
        "stringData",
        "no secret values in manifests",
    ),
    Case(
        "nodepool-wrong-zone",
        f"{ZONE}/karpenter.yaml",
        "        values:\n        - us-west-2a",
        "        values:\n        - us-west-2c",
        "      requirements:",
        "spec.template.spec.requirements",
        "must require topology.kubernetes.io/zone In [us-west-2a]",
    ),
    Case(
        "nodepool-v1beta1-consolidation-policy",
        f"{ZONE}/karpenter.yaml",
        "consolidationPolicy: WhenEmpty",
        "consolidationPolicy: WhenUnderutilized",
        "    consolidationPolicy: WhenUnderutilized",
        "spec.disruption.consolidationPolicy",
        "expected one of: WhenEmpty, WhenEmptyOrUnderutilized",
    ),
    Case(
        "ec2nodeclass-without-ami-selector",
        f"{ZONE}/karpenter.yaml",
        "  amiSelectorTerms:\n  - alias: al2023@v20260714\n",
        "",
        "spec:",
        "spec.amiSelectorTerms",
        "required field 'amiSelectorTerms' is missing",
        nth=1,  # the EC2NodeClass's spec (a missing field points at its parent)
    ),
    Case(
        # prometheus-operator v0.93.0's CRD: interval is a Prometheus duration (pattern)
        "podmonitor-interval-not-a-duration",
        "monitoring/podmonitor.yaml",
        "interval: 15s",
        "interval: 15 seconds",
        "    interval: 15 seconds",
        "spec.podMetricsEndpoints[0].interval",
        "violates pattern",
    ),
    Case(
        "keda-and-hpa-on-one-lws",
        f"{ZONE}/hpa.yaml",
        "",
        "",
        "    name: vllm-us-west-2a",
        "spec.scaleTargetRef.name",
        "never apply both",
        report=f"{ZONE}/scaledobject.yaml",
        extra=_copy_keda,
    ),
    Case(
        "broken-yaml",
        f"{ZONE}/hpa.yaml",
        "  minReplicas: 1\n",
        "  minReplicas: [1\n",
        "  maxReplicas: 4",
        "-",
        "not valid YAML",
    ),
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    render(out_dir=out)
    return out


def test_cases_are_distinct_and_enough() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 20
    assert len({c.message for c in CASES}) == len(CASES)


def test_rendered_baseline_is_clean(rendered: Path) -> None:
    assert validate(rendered) == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_manifest_fails_with_file_line_and_field(
    case: Case, rendered: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "broken"
    shutil.copytree(rendered, root)
    target = root / case.file
    text = target.read_text()
    if case.old:
        assert case.old in text, f"case {case.id}: {case.old!r} not in {case.file}"
        target.write_text(text.replace(case.old, case.new, 1))
    if case.extra:
        case.extra(root)
    report = root / (case.report or case.file)
    lines = report.read_text().splitlines()
    assert case.at in lines, f"case {case.id}: no line {case.at!r} in {report.name}"
    line = [i for i, text in enumerate(lines) if text == case.at][case.nth] + 1

    status = main(["validate", str(root)])

    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err
    hits = [ln for ln in err.splitlines() if ln.startswith(f"{report}:{line}: ")]
    assert hits, f"no problem at {report.name}:{line}; got:\n{err}"
    assert any(case.field in h and case.message in h for h in hits), (
        f"expected field {case.field!r} and {case.message!r} at line {line}; got:\n"
        + "\n".join(hits)
    )
