"""RSG's internals and the per-class test accuracy over epochs, from a run's metrics.jsonl.

The command line only: the code is tools/plot_rsg_diagnostics.py (`python scripts/plot_rsg_diagnostics.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/plot_rsg_diagnostics.py"):
    from tools.plot_rsg_diagnostics import main

if __name__ == "__main__":
    sys.exit(main())
