#!/usr/bin/env bash
# Set up (if needed) and run the dashboard on the bundled replay: http://127.0.0.1:8050
# Extra arguments go to app.py and win over the defaults here, e.g.
#   scripts/run.sh --speed 60 --port 8060
#   scripts/run.sh --source auto        # live exchange data when reachable, else the replay
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python app.py --source replay "$@"
