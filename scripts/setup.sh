#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with everything the project needs.
#   bash scripts/setup.sh            then use .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -r requirements.txt pytest
# Installs the project editable (rsg, core, data, losses, models, engine, tools): scripts/ and tests import them.
.venv/bin/python -m pip install --quiet --no-deps -e .
