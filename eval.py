"""Evaluate a checkpoint: overall top-1 and many / medium / few-shot accuracy, plus a per-class CSV.

    python eval.py --checkpoint runs/X/best.pt [key=value ...]

The model is rebuilt from the config stored in the checkpoint (overrides apply, e.g.
data.root=/elsewhere) without RSG: the evaluated network is exactly the plain backbone and head.
"""

import argparse
import os
import sys

from engine.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by train.py")
    parser.add_argument("--output", default=None, help="per-class CSV (default: <checkpoint>.per_class.csv)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the stored config, e.g. data.root=...")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from engine.evaluation import evaluate_checkpoint

        output = args.output or os.path.splitext(args.checkpoint)[0] + ".per_class.csv"
        evaluate_checkpoint(args.checkpoint, args.overrides, output)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
