"""Memory of RSG in the large-scale recipes: parameters, gradients, momentum, and one step's peak.

The command line only: the code is tools/rsg_memory.py (`python scripts/rsg_memory.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/rsg_memory.py"):
    from tools.rsg_memory import main

if __name__ == "__main__":
    sys.exit(main())
