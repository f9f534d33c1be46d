"""RSG's internals and the per-class test accuracy over epochs, from a run's metrics.jsonl.

    python scripts/plot_rsg_diagnostics.py RUN_DIR [BASELINE_DIR] [--out fig.png] [--no-tensorboard]

Panels: per-class test accuracy against the epoch (one thin line per class, coloured by shot group,
the group means thick; BASELINE_DIR's group means dashed), with T_th and the DRW start marked; the
two terms of L_CESC; the contrastive module's pair accuracy and the centers used per class; the
three terms of L_MV; mean norms of the real rare samples, the generated ones, x_fd-rare and
T(x_fd-freq), and the generated samples' distance to the rare center; the cosine between
T(x_fd-freq) and x_fd-rare. For a branch (engine/branch.py) the epochs before the branch point are
its parent's. The class counts (shot groups) come from the run's checkpoint.
"""

import os
import sys

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from engine.metrics import SHOT_GROUPS, shot_group
from engine.run_folder import METRICS_FILE, metrics_records, training_counts
from rsg import MV_TERMS
from tools.figures import read_run_config, require_pyplot, save_figure

GROUP_COLOURS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
RIGHT_AXIS = {"rsg_contrastive_accuracy"}   # a fraction in [0, 1], beside counts of centers
PANELS = (  # (title, [(metrics key in record["train"]: rsg_ and a name of rsg.SCALAR_DIAGNOSTICS, legend label)])
    ("L_CESC terms (Eq. 5), log scale", [("rsg_center_loss", "center"), ("rsg_contrastive_loss", "contrastive")]),
    ("centers used; h's pair accuracy (right axis)", [("rsg_centers_used", "centers used per class (exp entropy)"),
                                                      ("rsg_centers_used_min", "fewest centers of a class"),
                                                      ("rsg_contrastive_accuracy", "h accuracy on its pairs")]),
    ("L_MV terms (Eq. 6), log scale", [(f"rsg_mv_{term}", term) for term in MV_TERMS]),
    ("mean channel norm per position", [("rsg_norm_rare", "real rare"), ("rsg_norm_generated", "generated"),
                                        ("rsg_norm_fd_rare", "x_fd-rare (rare spread)"),
                                        ("rsg_norm_transformed", "T(x_fd-freq)"),
                                        ("rsg_spread_generated", "generated spread")]),
    ("cosine(T(x_fd-freq), x_fd-rare)", [("rsg_cosine_transformed_rare", "mean cosine")]),
)


def read_records(run_dir: str) -> list:
    if not os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
        raise UserError(f"{run_dir} has no metrics.jsonl (train.py writes one per epoch)")
    return metrics_records(run_dir)


def class_counts_of(run_dir: str) -> list:
    counts = training_counts(run_dir)
    if counts is None:
        raise UserError(f"{run_dir} has neither a checkpoint (last.pt) nor an exported report (last.report.json) "
                        "to read the training class counts from")
    return counts


def accuracy_series(records: list):
    """(epochs, per-class accuracies per epoch) of the evaluated epochs that logged them."""
    key = next((k for k in ("test_per_class", "val_per_class") if any(r.get(k) for r in records)), "test_per_class")
    evaluated = [r for r in records if r.get(key)]
    return [r["epoch"] for r in evaluated], [r[key] for r in evaluated]


def group_means(accuracies: list, groups: list, group: str) -> list:
    means = []
    for row in accuracies:
        values = [a for a, g in zip(row, groups) if g == group and a is not None]
        means.append(sum(values) / len(values) if values else float("nan"))
    return means


def draw_per_class(axis, records, groups, baseline=None):
    epochs, accuracies = accuracy_series(records)
    if not epochs:
        axis.text(0.5, 0.5, "no per-class test accuracy logged", ha="center", transform=axis.transAxes)
        return
    for index, group in enumerate(groups):
        axis.plot(epochs, [row[index] for row in accuracies], color=GROUP_COLOURS[group], alpha=0.25, lw=0.8)
    for group in SHOT_GROUPS:
        if group in groups:
            axis.plot(epochs, group_means(accuracies, groups, group), color=GROUP_COLOURS[group], lw=2.5,
                      label=f"{group} ({groups.count(group)} classes)")
            if baseline:
                base_epochs, base_accuracies = accuracy_series(baseline)
                axis.plot(base_epochs, group_means(base_accuracies, groups, group), color=GROUP_COLOURS[group],
                          lw=1.5, ls="--")
    axis.set_title("per-class test accuracy (%)" + (", baseline dashed" if baseline else ""))
    axis.set_xlabel("epoch")
    axis.legend(fontsize=7)


def mark_schedule(axis, config: dict) -> None:
    if config["rsg"]["enabled"]:
        axis.axvline(config["rsg"]["threshold_epoch"] - 0.5, color="k", ls=":", lw=1, label="T_th")
    if config["loss"]["reweight"] == "drw":
        axis.axvline(config["loss"]["reweight_start"] - 0.5, color="grey", ls="--", lw=0.8, label="DRW start")


def draw_panel(axis, records, title, series) -> None:
    handles = []
    right = None
    for index, (key, label) in enumerate(series):
        points = [(r["epoch"], r["train"][key]) for r in records if key in r.get("train", {})]
        if points:
            target = axis
            if key in RIGHT_AXIS:
                right = right or axis.twinx()
                right.set_ylim(0, 1)
                target = right
            handles += target.plot(*zip(*points), marker="o", ms=3, label=label, color=f"C{index}")
    if title.endswith("log scale") and handles:
        # the loss terms differ by orders of magnitude (the center term in the tens of thousands, a
        # cross-entropy below 1); all are positive
        axis.set_yscale("log")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("epoch")
    if handles:
        axis.legend(handles=handles, fontsize=7)
    else:
        axis.text(0.5, 0.5, "not logged", ha="center", transform=axis.transAxes)


def diagnostics_figure(run_dir: str, baseline_dir=None):
    plt = require_pyplot()
    config, records = read_run_config(run_dir), read_records(run_dir)
    groups = [shot_group(n) for n in class_counts_of(run_dir)]
    baseline = read_records(baseline_dir) if baseline_dir else None
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    axes = axes.ravel()
    draw_per_class(axes[0], records, groups, baseline)
    for axis, (title, series) in zip(axes[1:], PANELS):
        draw_panel(axis, records, title, series)
    for axis in axes:
        mark_schedule(axis, config)
        axis.set_xlim(-0.5, config["train"]["epochs"] - 0.5)
    figure.suptitle(f"{config['name']}: RSG diagnostics ({run_dir}); dotted: T_th, grey dashed: DRW start", fontsize=10)
    figure.tight_layout()
    return figure, config


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("run_dir", help="a run folder (metrics.jsonl, config.yaml, a checkpoint)")
    parser.add_argument("baseline_dir", nargs="?", help="a run without RSG whose group means are drawn dashed")
    parser.add_argument("--out", help="PNG file (default: <run_dir>/rsg_diagnostics.png)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not add the figure to TensorBoard")
    return parser.parse_args(argv)


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    figure, config = diagnostics_figure(args.run_dir, args.baseline_dir)
    out = args.out or os.path.join(args.run_dir, "rsg_diagnostics.png")
    save_figure(figure, out, args.run_dir, "figures/rsg_diagnostics", config["train"]["epochs"], 110,
                not args.no_tensorboard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
