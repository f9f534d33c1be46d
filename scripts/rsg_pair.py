"""A w/o-vs-w/ RSG comparison as a paired design: per seed, one shared first stage up to T_th, then two
branches from its threshold.pt, one with RSG and one without (engine/branch.py).

The command line only: the code is tools/rsg_pair.py (`python scripts/rsg_pair.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/rsg_pair.py"):
    from tools.rsg_pair import main

if __name__ == "__main__":
    sys.exit(main())
