"""Train a model from a YAML config.

    python train.py --config configs/cifar10_lt/ldam_drw_rsg_r100.yaml [key=value ...]
    python train.py --config X --print-config          # the resolved config, then exit
    python train.py --config X --resume auto           # continue the run in its output_dir
    python train.py --config X --overwrite             # replace the run in its output_dir

A run folder has one owner: a fresh run into a folder that holds another run's files stops
without changing them (README "Run folders").
    python train.py --config X --branch-from RUN/threshold.pt output_dir=NEW   # a branch of RUN at T_th
"""

import sys

from core.startup import interrupt_quietly

with interrupt_quietly("train.py"):
    from engine.config import dump_config, load_config
    from engine.exits import CommandLine, reports_user_errors


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--resume", default=None, help="'auto' (the run's last.pt, if any) or a checkpoint path")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in output_dir (its checkpoints, metrics, logs) with this one")
    parser.add_argument("--branch-from", default=None, metavar="CHECKPOINT",
                        help="start from another run's checkpoint (an epoch boundary, e.g. its threshold.pt) "
                             "into this config's output_dir; the config may differ only in what acts from "
                             "that epoch on (docs/CHOICES.md, Branching)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*",
                        help="dotted overrides, anywhere on the line, e.g. optim.lr=0.05 rsg.enabled=false")
    return parser.parse_intermixed_args(argv)     # overrides before and after an option, in their order


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from engine.run import fit  # the engine (data loaders, the run) only once the config is good

    fit(cfg, resume=args.resume, overwrite=args.overwrite, branch_from=args.branch_from)
    return 0


if __name__ == "__main__":
    sys.exit(main())
