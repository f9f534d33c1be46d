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
# The checkout on the venv's path (a .pth file): scripts/ and tests import rsg, core, data, losses,
# models, engine and tools from it. `pip install .` installs only the plug-in rsg (pyproject.toml).
.venv/bin/python -m pip uninstall --quiet --yes rsg-lt 2>/dev/null || true   # an editable install of older setups
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" > "$site/rsg_lt_checkout.pth"
