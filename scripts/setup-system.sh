#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the lab needs, idempotently.
# Runs apt-get only when something is missing; needs root (or passwordless sudo) then.
# Optional parts: `setup-system.sh bench` also installs what benchmarks/ need (nginx, wrk).
set -euo pipefail

packages=()
command -v haproxy >/dev/null 2>&1 || packages+=(haproxy)
# Debian's Chromium drives the JupyterLab browser test through Playwright (no browser download).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || packages+=(chromium)
for part in "$@"; do
  case "$part" in
    bench)
      # benchmarks/loadgen_capacity.py: a canned nginx SSE server and wrk as the ceiling.
      command -v nginx >/dev/null 2>&1 || packages+=(nginx-light)
      command -v wrk >/dev/null 2>&1 || packages+=(wrk)
      ;;
    *) echo "setup: unknown part '$part' (known: bench)" >&2; exit 2 ;;
  esac
done
# python3 -m venv needs ensurepip, which Debian ships in python3-venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv python3-pip)

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "setup: missing system packages: ${packages[*]}." >&2
  echo "setup: run 'sudo apt-get install -y ${packages[*]}' (or re-run make as root), then retry." >&2
  exit 1
fi

echo "setup: installing ${packages[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
