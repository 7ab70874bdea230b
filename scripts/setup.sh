#!/usr/bin/env bash
# Set up Tickwise on a fresh machine: .venv/ in the repo root with every Python package.
#   scripts/setup.sh            runtime packages (requirements.txt)
#   scripts/setup.sh --dev      + test tools (requirements-dev.txt), Debian's chromium +
#                               chromium-driver for the browser tests, and Debian's postgresql
#                               (server binaries only: the store tests start their own server)
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11+ is needed (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

reqs=requirements.txt
[ $dev = 1 ] && reqs=requirements-dev.txt
# Quiet when everything is already there; pip prints what it installs otherwise.
.venv/bin/python -m pip install --disable-pip-version-check -q -r "$reqs"

if [ $dev = 1 ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
    || ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }; then
  echo "setup: installing Debian's chromium, chromium-driver and postgresql for the tests"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium chromium-driver postgresql >/dev/null
  # The tests start their own server in a temporary folder; the package's cluster is not needed.
  if command -v systemctl >/dev/null && systemctl is-active --quiet postgresql 2>/dev/null; then
    $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
  fi
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, dash; print(f"torch {torch.__version__}, dash {dash.__version__}")'))"
