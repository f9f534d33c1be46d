#!/usr/bin/env bash
# Shared by scripts/table<N>.sh: scripts/paper_tables.py --table N with the project's Python
# ($PYTHON, else .venv/bin/python, else python3). Options: python scripts/paper_tables.py --help.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
table="$1"
shift
exec "$python" "$here/paper_tables.py" --table "$table" "$@"
