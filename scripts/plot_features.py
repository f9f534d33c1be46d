"""RSG's features in 2-D: real frequent-class, real rare-class and generated samples at RSG's position,
pooled (global average) and projected with one PCA.

The command line only: the code is tools/plot_features.py (`python scripts/plot_features.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/plot_features.py"):
    from tools.plot_features import main

if __name__ == "__main__":
    sys.exit(main())
