"""The figures of docs/REPRODUCTION.md, drawn from a paired study's files in results/ (no checkpoint
needed) and from a JSON list of measured steps.

    python scripts/plot_reproduction.py results/cpu_paper_study \
        --config configs/cpu_paper/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml --seeds 0,1,2 --out docs/figures
    python scripts/plot_reproduction.py --waterfall results/six_points.json --out docs/figures

- `per_class_error.png`: the final test error of each class, without and with RSG, the mean over
  the seeds with each seed's value as a dot; the classes labelled with their training counts.
- `test_error_curves.png`: the test error of every evaluated epoch from `--from-epoch` on, each
  branch and seed a thin line, the mean over seeds thick; the lr steps and the start of DRW / RSG
  marked from the runs' configs.
- `waterfall.png` (`--waterfall FILE`): from a start value to an end value through measured steps,
  FILE holding {"start": [label, value], "steps": [[label, change, uncertainty or null], ...],
  "end": [label, value]}; whatever the steps leave between their sum and the end is drawn as
  "not explained".
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from engine.run_folder import metrics_records
from tools.figures import read_run_config, require_pyplot
from tools.run_layout import pair_folders
from tools.run_planning import parse_seeds

BRANCHES = (("without_rsg", "w/o RSG", "tab:blue"), ("with_rsg", "w/ RSG", "tab:orange"))


def branch_folders(output_root: str, config: str, seeds) -> dict:
    """{branch: [folder per seed]}, each a finished run folder with metrics.jsonl."""
    found = {branch: [] for branch, _, _ in BRANCHES}
    for seed in seeds:
        folders = pair_folders(output_root, config, seed)
        for branch in found:
            if not metrics_records(folders[branch]):
                raise UserError(f"{folders[branch]} holds no metrics.jsonl: is {output_root} the study's "
                                f"--output-root, and seed {seed} finished?")
            found[branch].append(folders[branch])
    return found


def class_table(folder: str) -> list[tuple[str, int]]:
    """(name, training count) per class, from the per-class CSV exported beside the run's evidence."""
    path = os.path.join(folder, "last.per_class.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing: export the run with scripts/export_results.py, which writes it")
    with open(path, newline="") as f:
        return [(row["name"], int(row["train_count"])) for row in csv.DictReader(f)]


def final_per_class_error(folder: str) -> list[float]:
    record = next(r for r in reversed(metrics_records(folder)) if r.get("test_per_class"))
    return [100.0 - accuracy for accuracy in record["test_per_class"]]


def per_class_figure(folders: dict):
    plt = require_pyplot()
    classes = class_table(folders["with_rsg"][0])
    figure, axis = plt.subplots(figsize=(10, 4.2))
    width = 0.38
    for offset, (branch, label, colour) in zip((-width / 2, width / 2), BRANCHES):
        errors = [final_per_class_error(folder) for folder in folders[branch]]
        means = [statistics.fmean(column) for column in zip(*errors)]
        spreads = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in zip(*errors)]
        positions = [index + offset for index in range(len(classes))]
        axis.bar(positions, means, width, yerr=spreads, color=colour, alpha=0.75, capsize=2,
                 label=f"{label} (mean ± std over {len(errors)} seeds)")
        for seed_errors in errors:
            axis.plot(positions, seed_errors, "o", color="black", markersize=2.5)
    axis.set_xticks(range(len(classes)))
    axis.set_xticklabels([f"{name}\n{count}" for name, count in classes], fontsize=8)
    axis.set_xlabel("class (training images)")
    axis.set_ylabel("final test error (%)")
    axis.set_title("Per-class test error at the final epoch, without and with RSG (dots: each seed)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def schedule_marks(config: dict) -> list[tuple[int, str]]:
    """(epoch, what happens) for the lr steps, DRW's start and T_th of a run's config."""
    marks = {}
    for milestone in config["optim"]["milestones"]:
        marks.setdefault(milestone, []).append("lr step")
    if config["loss"].get("reweight") == "drw":
        marks.setdefault(config["loss"]["reweight_start"], []).append("DRW")
    if config["rsg"]["enabled"]:
        marks.setdefault(config["rsg"]["threshold_epoch"], []).append("T_th")
    return sorted((epoch, ", ".join(words)) for epoch, words in marks.items())


def error_curve(folder: str, from_epoch: int) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], 100.0 - r["test"]["top1"]) for r in metrics_records(folder)
              if r.get("test") and r["epoch"] >= from_epoch]
    return [p[0] for p in points], [p[1] for p in points]


def curves_figure(folders: dict, from_epoch: int):
    plt = require_pyplot()
    figure, axis = plt.subplots(figsize=(10, 4.2))
    for branch, label, colour in BRANCHES:
        curves = [error_curve(folder, from_epoch) for folder in folders[branch]]
        for epochs, errors in curves:
            axis.plot(epochs, errors, color=colour, linewidth=0.7, alpha=0.45)
        common = sorted(set.intersection(*(set(epochs) for epochs, _ in curves)))
        means = [statistics.fmean(dict(zip(*curve))[epoch] for curve in curves) for epoch in common]
        axis.plot(common, means, color=colour, linewidth=2.2, label=f"{label}, mean of {len(curves)} seeds")
    low, high = axis.get_ylim()
    for epoch, words in schedule_marks(read_run_config(folders["with_rsg"][0])):
        if epoch >= from_epoch:
            axis.axvline(epoch, color="grey", linestyle="--", linewidth=0.8)
            axis.text(epoch + 0.5, high - 0.04 * (high - low), words, fontsize=8, color="dimgrey", va="top")
    axis.set_xlabel("epoch")
    axis.set_ylabel("test error (%)")
    axis.set_title(f"Test error from epoch {from_epoch}: each seed (thin) and the mean (thick)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def read_waterfall(path: str) -> dict:
    try:
        with open(path) as f:
            content = json.load(f)
        start, end = (str(content["start"][0]), float(content["start"][1])), (str(content["end"][0]), float(content["end"][1]))
        steps = [(str(s[0]), float(s[1]), None if s[2] is None else float(s[2])) for s in content["steps"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise UserError(f"cannot read the waterfall {path} ({type(error).__name__}: {error}); it must be JSON with "
                        f"start [label, value], steps [[label, change, uncertainty or null], ...], end [label, value]") from None
    return {"start": start, "steps": steps, "end": end}


def waterfall_figure(waterfall: dict, ylabel: str = "top-1 error (%)"):
    """Bars from the start value through each step's change to the end value; what the steps do not
    account for between their sum and the end is a hatched bar, "not explained"."""
    plt = require_pyplot()
    (start_label, start), (end_label, end) = waterfall["start"], waterfall["end"]
    steps = list(waterfall["steps"])
    left = end - (start + sum(change for _, change, _ in steps))
    if abs(left) > 1e-9:
        steps.append(("not explained", left, None))
    figure, axis = plt.subplots(figsize=(max(8, 1.3 * (len(steps) + 2)), 4.6))
    axis.bar(0, start, color="grey", width=0.6)
    axis.text(0, start, f"{start:.2f}", ha="center", va="bottom", fontsize=8)
    level = start
    for index, (label, change, uncertainty) in enumerate(steps, start=1):
        unexplained = label == "not explained"
        axis.bar(index, change, bottom=level, width=0.6, color="white" if unexplained else
                 ("tab:red" if change > 0 else "tab:green"), edgecolor="black", hatch="//" if unexplained else None)
        if uncertainty is not None:
            axis.errorbar(index, level + change, yerr=uncertainty, color="black", capsize=3)
        words = f"{change:+.2f}" + (f" ± {uncertainty:.2f}" if uncertainty is not None else "")
        axis.text(index, max(level, level + change), words, ha="center", va="bottom", fontsize=8)
        level += change
    axis.bar(len(steps) + 1, end, color="grey", width=0.6)
    axis.text(len(steps) + 1, end, f"{end:.2f}", ha="center", va="bottom", fontsize=8)
    labels = [start_label] + [label for label, _, _ in steps] + [end_label]
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels([label.replace(": ", ":\n") for label in labels], fontsize=7.5, rotation=20, ha="right")
    axis.set_ylim(min(start, end) * 0.85, max(level, start, end) * 1.08)
    axis.set_ylabel(ylabel)
    axis.set_title("Where the points go: each step a measured change (red up, green down)")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def write(figure, folder: str, name: str, dpi: int) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    figure.savefig(path, dpi=dpi)
    print(f"wrote {path}")
    return path


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("output_root", nargs="?", help="the study's --output-root (e.g. results/cpu_paper_study)")
    parser.add_argument("--config", help="the with-RSG config the pair was run with")
    parser.add_argument("--seeds", type=parse_seeds, default=(0, 1, 2))
    parser.add_argument("--from-epoch", type=int, default=150, help="the first epoch of the error curves")
    parser.add_argument("--waterfall", help="a JSON file of measured steps (see above)")
    parser.add_argument("--out", required=True, help="folder of the PNG files")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    if args.output_root is None and args.waterfall is None:
        raise UserError("give a study's output root (with --config), or --waterfall FILE")
    if args.output_root is not None:
        if not args.config:
            raise UserError("--config: the with-RSG config of the pair is needed to find its runs")
        folders = branch_folders(args.output_root, args.config, args.seeds)
        write(per_class_figure(folders), args.out, "per_class_error.png", args.dpi)
        write(curves_figure(folders, args.from_epoch), args.out, "test_error_curves.png", args.dpi)
    if args.waterfall is not None:
        write(waterfall_figure(read_waterfall(args.waterfall)), args.out, "waterfall.png", args.dpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
