"""Per-class test accuracy against the class's training count (log scale), for a run and optionally its
baseline on the same axes (e.g. LDAM-DRW-RSG against LDAM-DRW).

The command line only: the code is tools/plot_per_class.py (`python scripts/plot_per_class.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/plot_per_class.py"):
    from tools.plot_per_class import main

if __name__ == "__main__":
    sys.exit(main())
