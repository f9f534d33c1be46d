"""Write docs/CONFIG.md, the config reference, from the config and the registries (--check: is it stale?).

The command line only: the code is tools/config_reference.py (`python scripts/config_reference.py --help`).
"""

import sys

from tools.config_reference import main

if __name__ == "__main__":
    sys.exit(main())
