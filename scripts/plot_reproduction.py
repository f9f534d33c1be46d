"""The figures of docs/REPRODUCTION.md, from a paired study's files in results/ and a JSON of steps.

The command line only: the code is tools/reproduction_figures.py (`python scripts/plot_reproduction.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/plot_reproduction.py"):
    from tools.reproduction_figures import main

if __name__ == "__main__":
    sys.exit(main())
