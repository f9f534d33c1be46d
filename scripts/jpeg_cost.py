"""What the JPEG copy costs, from the runs of configs/jpeg_cost/ (PNG against JPEG, crosswise).

The command line only: the code is tools/jpeg_cost.py (`python scripts/jpeg_cost.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/jpeg_cost.py"):
    from tools.jpeg_cost import main

if __name__ == "__main__":
    sys.exit(main())
