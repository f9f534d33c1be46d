"""Copy the evidence of finished runs (configs, metrics, logs, a float32 evaluation of last.pt) into results/.

The command line only: the code is tools/export_results.py (`python scripts/export_results.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/export_results.py"):
    from tools.export_results import main

if __name__ == "__main__":
    sys.exit(main())
