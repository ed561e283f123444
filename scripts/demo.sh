#!/usr/bin/env bash
# Run the demo: a FastAPI scoring service collecting to the local default (./mdc-data), with traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[demo,analysis]"
exec .venv/bin/python examples/demo.py "$@"
