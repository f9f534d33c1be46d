"""Run many training commands at once, a few per device: the scheduler behind `scripts/paper_tables.py
--jobs-per-gpu N`.

The command line only: the code is tools/job_pool.py (`python scripts/job_pool.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/job_pool.py"):
    from tools.job_pool import main

if __name__ == "__main__":
    sys.exit(main())
