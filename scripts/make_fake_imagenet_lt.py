"""Write a tiny dataset in the ImageNet-LT format (or Places-LT's, or iNaturalist 2018's) for smoke
runs.

The command line only: the code is tools/make_fake_imagenet_lt.py (`python scripts/make_fake_imagenet_lt.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/make_fake_imagenet_lt.py"):
    from tools.make_fake_imagenet_lt import main

if __name__ == "__main__":
    sys.exit(main())
