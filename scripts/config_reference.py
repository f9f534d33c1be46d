"""Write docs/CONFIG.md, the config reference, from the config and the registries (--check: is it stale?).

The command line only: the code is tools/config_reference.py (`python scripts/config_reference.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/config_reference.py"):
    from tools.config_reference import main

if __name__ == "__main__":
    sys.exit(main())
