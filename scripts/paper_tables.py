"""The paper's tables as data, and the runner behind scripts/table{1,2,3,5,6,7,8,9}.sh.

The command line only: the code is tools/paper_tables.py (`python scripts/paper_tables.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/paper_tables.py"):
    from tools.paper_tables import main

if __name__ == "__main__":
    sys.exit(main())
