#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the lab needs, idempotently.
# Runs apt-get only when something is missing; needs root (or passwordless sudo) then.
# Optional parts: `setup-system.sh bench` also installs what benchmarks/ need (nginx, wrk).
set -euo pipefail

packages=()
command -v haproxy >/dev/null 2>&1 || packages+=(haproxy)
# The twin starts its own Prometheus (and promtool checks the alerting rules); both come from
# Debian's prometheus package.
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
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

# Debian's prometheus package enables and starts a system-wide server on :9090. The twin never
# uses it (it runs its own on a free 127.0.0.1 port with its own config and data dir), so stop
# and disable it rather than leave a second Prometheus scraping nothing on every boot.
if [[ " ${packages[*]} " == *" prometheus "* ]]; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
