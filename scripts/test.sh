#!/usr/bin/env bash
# Set up (if needed, test tools and Chromium included) and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k candles
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/python -m pytest -q "$@"
