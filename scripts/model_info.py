"""Parameters and evaluation cost of the configured model, with and without RSG.

The command line only: the code is tools/model_info.py (`python scripts/model_info.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/model_info.py"):
    from tools.model_info import main

if __name__ == "__main__":
    sys.exit(main())
