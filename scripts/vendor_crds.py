#!/usr/bin/env python3
"""Vendor the upstream CRD schemas ``labctl validate`` checks the lab's custom objects against.

For each CRD the lab uses, read the CRD manifest of the pinned upstream release, keep the
``openAPIV3Schema`` of the one version the lab deploys, drop the ``description`` texts (the
bulk of a CRD's size; they carry no validation) and write it as compact JSON to
``labutils/schemas/crd-<plural>.<group>.json`` with its source (repository, tag, path,
license) recorded in the file and in ``labutils/schemas/SOURCES.md``.

Usage (the CRD files are fetched from GitHub at the tags below)::

    python scripts/vendor_crds.py                 # download from raw.githubusercontent.com
    python scripts/vendor_crds.py --from-dir DIR  # DIR/<repo with / as +>/<path>, offline

Bump a version here and in ``labutils/data/addons.yaml`` together; the tests check they agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "labutils" / "schemas"

# (repository, tag, path of the CRD manifest, version served to the lab, license)
CRDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("kubernetes-sigs/lws", "v0.10.0",
     "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml", "v1", "Apache-2.0"),
    ("kubernetes-sigs/gateway-api", "v1.6.1",
     "config/crd/standard/gateway.networking.k8s.io_gatewayclasses.yaml", "v1", "Apache-2.0"),
    ("kubernetes-sigs/gateway-api", "v1.6.1",
     "config/crd/standard/gateway.networking.k8s.io_gateways.yaml", "v1", "Apache-2.0"),
    ("kubernetes-sigs/gateway-api", "v1.6.1",
     "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml", "v1", "Apache-2.0"),
    ("envoyproxy/gateway", "v1.9.0",
     "charts/gateway-helm/charts/crds/crds/generated/"
     "gateway.envoyproxy.io_backendtrafficpolicies.yaml", "v1alpha1", "Apache-2.0"),
    ("envoyproxy/gateway", "v1.9.0",
     "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_envoyproxies.yaml",
     "v1alpha1", "Apache-2.0"),
    ("aws/karpenter-provider-aws", "v1.14.1",
     "pkg/apis/crds/karpenter.sh_nodepools.yaml", "v1", "Apache-2.0"),
    ("aws/karpenter-provider-aws", "v1.14.1",
     "pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml", "v1", "Apache-2.0"),
    ("kedacore/keda", "v2.20.2",
     "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1", "Apache-2.0"),
    ("prometheus-operator/prometheus-operator", "v0.93.0",
     "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml", "v1",
     "Apache-2.0"),
)  # fmt: skip


def _strip(node: Any) -> Any:
    """The schema without ``description`` texts (a property *named* description stays)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: _strip(sub) for name, sub in value.items()}
            else:
                out[key] = _strip(value)
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _read(repo: str, tag: str, path: str, from_dir: Path | None) -> str:
    if from_dir is not None:
        return (from_dir / repo.replace("/", "+") / path).read_text()
    url = f"https://raw.githubusercontent.com/{repo}/{tag}/{path}"
    with urllib.request.urlopen(url, timeout=60) as response:
        return str(response.read().decode())


def vendor(from_dir: Path | None) -> list[Path]:
    """Write one JSON schema per CRD of :data:`CRDS` and ``SOURCES.md``; return the files."""
    written = []
    rows = []
    for repo, tag, path, version, license_id in CRDS:
        crd = yaml.safe_load(_read(repo, tag, path, from_dir))
        spec = crd["spec"]
        served = [v for v in spec["versions"] if v["name"] == version]
        if not served:
            sys.exit(f"{repo}@{tag} {path}: no version {version}")
        schema = _strip(served[0]["schema"]["openAPIV3Schema"])
        group, kind, plural = spec["group"], spec["names"]["kind"], spec["names"]["plural"]
        document = {
            "x-lab-source": {
                "repository": f"https://github.com/{repo}",
                "tag": tag,
                "path": path,
                "license": license_id,
                "crd": f"{plural}.{group}",
                "apiVersion": f"{group}/{version}",
                "kind": kind,
                "scope": spec["scope"],
                "note": "openAPIV3Schema of this version, description texts removed",
            },
            "openAPIV3Schema": schema,
        }
        out = OUT / f"crd-{plural}.{group}.json"
        out.write_text(json.dumps(document, separators=(",", ":"), sort_keys=True) + "\n")
        written.append(out)
        rows.append(
            f"| `{out.name}` | {kind} `{group}/{version}` | "
            f"[{repo}](https://github.com/{repo}) `{tag}` `{path}` | {license_id} |"
        )
    sources = OUT / "SOURCES.md"
    sources.write_text(
        "# Vendored CRD schemas\n\n"
        "Written by `scripts/vendor_crds.py` from the upstream CRD manifests of the pinned\n"
        "releases (the same versions `labutils/data/addons.yaml` installs); only the\n"
        "`openAPIV3Schema` of the version the lab uses, without `description` texts.\n"
        "Each file's `x-lab-source` repeats its origin. All are Apache-2.0 licensed.\n\n"
        "| file | kind | source (repository, tag, path) | license |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    return [*written, sources]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-dir", type=Path, help="read CRDs from DIR/<owner+repo>/<path>")
    args = parser.parse_args()
    for path in vendor(args.from_dir):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
