"""RSG's two variants side by side on one batch of real feature maps: L_MV and the generated samples.

The command line only: the code is tools/rsg_variants.py (`python scripts/rsg_variants.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/rsg_variants.py"):
    from tools.rsg_variants import main

if __name__ == "__main__":
    sys.exit(main())
