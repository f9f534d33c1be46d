"""Write an image-folder copy of CIFAR-10 back as CIFAR-10's python batches, in CIFAR's own order.

The command line only: the code is tools/cifar_batches.py (`python scripts/write_cifar_batches.py --help`).
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("scripts/write_cifar_batches.py"):
    from tools.cifar_batches import main

if __name__ == "__main__":
    sys.exit(main())
