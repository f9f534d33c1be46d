"""Decoded-and-augmented images per second per CPU core, for each way of reading a JPEG.

The command line only: the code is tools/benchmark_loading.py (`python scripts/benchmark_loading.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/benchmark_loading.py"):
    from tools.benchmark_loading import main

if __name__ == "__main__":
    sys.exit(main())
