"""The "beyond" tables (issue 14): today's simple long-tail baselines, each without and with RSG.

The command line only: the code is tools/beyond_tables.py (`python scripts/beyond_tables.py --help`).
"""

import sys

from tools.beyond_tables import main

if __name__ == "__main__":
    sys.exit(main())
