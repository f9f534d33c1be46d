"""A w/o-vs-w/ RSG comparison as a paired design: per seed, one shared first stage up to T_th, then
two branches from its threshold.pt, one with RSG and one without (engine/branch.py).

    python scripts/rsg_pair.py --config configs/cpu_short/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml \
        --seeds 0,1,2 --data-root /data/cifar10-jpeg [--output-root runs] [key=value ...]
    python scripts/rsg_pair.py --config W.yaml --without WO.yaml --seeds 0 --dry-run
    python scripts/rsg_pair.py --config W.yaml --without WO.yaml --seeds 0,1,2 --output-root results/X --report --diagnostics

Before T_th RSG cannot change the backbone (it reads detached features and generates nothing), so
the two runs of a seed share their first T_th epochs exactly, and their difference is RSG's effect
on that backbone: the same expected difference as two runs from scratch, without the seed-to-seed
spread of the first stage, at the cost of T_th + 2 (E - T_th) epochs instead of 2 E.

Folders: <output-root>/<--config path under configs/, without .yaml>/seed<k>/{shared,with_rsg,
without_rsg}. The shared stage is the RSG config trained to T_th, named `<name>.shared_stage` (the
collector skips it); the branches carry their configs' own names, so scripts/collect_results.py
counts them as runs of those configs. Overrides go to every run; train.epochs=E sets the branches'
length, and the shared stage stops at T_th whatever it says. Finished stages are skipped,
interrupted ones resume. At the end: final error and many / medium / few of both branches per
seed, the per-seed differences (w/ minus w/o) and their mean ± std.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from tools.pair_plan import pair_commands
from tools.pair_report import diagnostics, pair_training_counts, per_class_differences, summary
from tools.run_planning import check_overrides, from_caller, parse_seeds, roots_and_overrides, whole_number


def repository_path(path: str) -> str:
    """A config path given from the caller's folder, as the repository root sees it."""
    path = from_caller(path)
    inside = os.path.isabs(path) and not os.path.relpath(path, ROOT).startswith("..")
    return os.path.relpath(path, ROOT) if inside else path


def gpus_per_run(text: str) -> int:
    return whole_number(text, 1, "takes the GPUs per run, 1 or more (1: python train.py, which runs on "
                                 "train.device, the CPU too)")


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--config", required=True, help="the config with RSG (it trains the shared stage)")
    parser.add_argument("--without", default=None,
                        help="the config without RSG (default: --config with rsg.enabled=false)")
    parser.add_argument("--seeds", type=parse_seeds, default=(0,), help="comma-separated seeds (default: 0)")
    parser.add_argument("--output-root", default="runs", help="the pair's folders go under it (default: runs)")
    parser.add_argument("--gpus", type=gpus_per_run, default=1,
                        help="1 (default): python train.py, on train.device; N > 1: torchrun with N processes")
    parser.add_argument("--data-root", default=None, help="data.root for every run (default: the config's)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands still to run, one per line")
    parser.add_argument("--no-summary", action="store_true", help="do not print the table at the end")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: print the table (and --diagnostics) of what has finished so far; "
                             "--output-root may be a results/ folder (scripts/export_results.py)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="after the table: RSG's internals per seed and the per-class differences")
    parser.add_argument("overrides", nargs="*",
                        help="key=value overrides passed to every run; train.epochs=E sets the branches' length, "
                             "the shared stage always stops at rsg.threshold_epoch")
    return parser.parse_intermixed_args(argv)


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    output_root, overrides = roots_and_overrides(args)
    with_config = repository_path(args.config)
    without_config = repository_path(args.without) if args.without else with_config
    os.chdir(ROOT)   # the commands name train.py and configs/ relative to the repository root
    check_overrides(overrides)
    if args.report and not os.path.isdir(output_root):
        raise UserError(f"--report: --output-root {output_root} does not exist; give the folder the pairs were "
                        f"trained under (or their results/ export)")
    started = time.time()
    for seed in () if args.report else args.seeds:
        for command in pair_commands(with_config, without_config, seed, output_root, overrides, args.gpus):
            print(" ".join(command) if args.dry_run else f"[seed {seed}] {' '.join(command)}", flush=True)
            if args.dry_run:
                continue
            status = subprocess.call(command)
            if status:
                print(f"error: seed {seed} failed (exit status {status}); finished stages are kept, run the "
                      f"same command again to continue", file=sys.stderr)
                return status
    if not args.dry_run and not args.no_summary:
        print(summary(with_config, args.seeds, output_root))
        if args.diagnostics:
            counts = pair_training_counts(with_config, args.seeds, output_root)
            print(diagnostics(with_config, args.seeds, output_root, counts))
            print(per_class_differences(with_config, args.seeds, output_root))
        if not args.report:
            print(f"wall time of this command: {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
