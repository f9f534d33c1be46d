"""A torch.profiler summary of real training steps before T_th and from it: the ops that take the most
time, the host synchronisations the CUDA runtime saw, and the gaps where the device waited for the
host.

The command line only: the code is tools/profile_step.py (`python scripts/profile_step.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/profile_step.py"):
    from tools.profile_step import main

if __name__ == "__main__":
    sys.exit(main())
