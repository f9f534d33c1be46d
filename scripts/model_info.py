"""Parameters and evaluation cost of the configured model, with and without RSG.

The command line only: the code is tools/model_info.py (`python scripts/model_info.py --help`).
"""

import sys

from tools.model_info import main

if __name__ == "__main__":
    sys.exit(main())
