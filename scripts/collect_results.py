"""Collect finished runs into the paper's tables: ours (mean and standard deviation over seeds), the
paper's number, and the difference, cell by cell.

The command line only: the code is tools/collect_results.py (`python scripts/collect_results.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/collect_results.py"):
    from tools.collect_results import main

if __name__ == "__main__":
    sys.exit(main())
