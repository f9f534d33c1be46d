"""Per-class test accuracy against the class's training count (log scale), for a run and optionally
its baseline on the same axes (e.g. LDAM-DRW-RSG against LDAM-DRW).

    python scripts/plot_per_class.py runs/cifar10_lt/ldam_drw_rsg_r100/seed0 runs/cifar10_lt/ldam_drw_r100/seed0 --out fig.png

Source: the per-class CSV that eval.py writes beside the checkpoint (<run>/last.per_class.csv, or
best.per_class.csv for runs that select on the validation list); when it is missing or older than
the checkpoint, the checkpoint is evaluated on the test split first (as eval.py does, needing the
dataset; --data-root when it moved). The figure also goes to the first run's TensorBoard.
"""

import os
import sys

from engine.exits import CommandLine, reports_user_errors
from tools.figures import per_class_csv, per_class_figure, read_per_class, read_run_config, require_pyplot, save_figure


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("run_dir", help="a run folder (config.yaml, last.pt / best.pt)")
    parser.add_argument("baseline_dir", nargs="?", help="a second run drawn on the same axes")
    parser.add_argument("--out", help="PNG file (default: <run_dir>/per_class.png)")
    parser.add_argument("--checkpoint-name", choices=["last", "best"], default=None,
                        help="which checkpoint (default: last; best for runs that select on val)")
    parser.add_argument("--data-root", help="data.root for the evaluation, if the dataset moved")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not add the figure to TensorBoard")
    return parser.parse_args(argv)


def series_of(run_dir: str, args):
    """(label, training counts, accuracies) of one run."""
    config = read_run_config(run_dir)
    overrides = [f"data.root={args.data_root}"] if args.data_root else []
    counts, accuracies = read_per_class(per_class_csv(run_dir, args.checkpoint_name, overrides))
    rsg = "with RSG" if config["rsg"]["enabled"] else "without RSG"
    return f"{config['name']}, {rsg} (mean per class {accuracies.mean():.1f}%)", counts, accuracies


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    require_pyplot()
    runs = [args.run_dir] + ([args.baseline_dir] if args.baseline_dir else [])
    series = [series_of(run, args) for run in runs]
    config = read_run_config(args.run_dir)
    figure = per_class_figure(series, f"{config['data']['name']}: per-class test accuracy against training count")
    out = args.out or os.path.join(args.run_dir, "per_class.png")
    save_figure(figure, out, args.run_dir, "figures/per_class_accuracy", config["train"]["epochs"], 120,
                not args.no_tensorboard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
