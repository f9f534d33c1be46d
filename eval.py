"""Evaluate a checkpoint: overall top-1 and many / medium / few-shot accuracy, plus a per-class CSV.

    python eval.py --checkpoint runs/X/best.pt [key=value ...]
    python eval.py --checkpoint runs/X/best.pt --split val     # split lists: the validation list

The test split gives the numbers to report; large-scale runs choose best.pt on the validation
list (data.eval_split: val), so `--split test` on their best.pt is the final figure.

The model is rebuilt from the config stored in the checkpoint (overrides apply, e.g.
data.root=/elsewhere) without RSG: the evaluated network is exactly the plain backbone and head.
"""

import os
import sys

from core.startup import interrupt_quietly

with interrupt_quietly("eval.py"):
    from engine.exits import CommandLine, reports_user_errors


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--checkpoint", required=True, help="a last.pt or best.pt written by train.py")
    parser.add_argument("--output", default=None,
                        help="per-class CSV (default: <checkpoint>.per_class.csv, <checkpoint>.val.per_class.csv)")
    parser.add_argument("--split", default="test", choices=["test", "val"],
                        help="the split to evaluate (default: test); val exists for split-list datasets")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the stored config, e.g. data.root=...")
    return parser.parse_intermixed_args(argv)


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    from engine.evaluation import evaluate_checkpoint

    suffix = ".per_class.csv" if args.split == "test" else f".{args.split}.per_class.csv"
    output = args.output or os.path.splitext(args.checkpoint)[0] + suffix
    evaluate_checkpoint(args.checkpoint, args.overrides, output, split=args.split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
