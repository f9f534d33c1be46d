"""Training and evaluation throughput, with and without RSG, on the standard and the device path.

The command line only: the code is tools/benchmark.py (`python scripts/benchmark.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/benchmark.py"):
    from tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
