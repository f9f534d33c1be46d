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

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

from core.errors import UserError
from engine.branch import branch_conflicts
from engine.config import config_to_dict, load_config
from engine.continuation import finished_run_conflicts
from engine.exits import reports_user_errors
from engine.run_folder import run_finished
from tools.paper_tables import (check_overrides, from_caller, parse_seeds, refuse_differing_runs, roots_and_overrides,
                                run_dir, train_launcher)

SHARED_STAGE_SUFFIX = ".shared_stage"   # the name of a shared first stage (scripts/collect_results.py skips it)
BRANCHES = ("without_rsg", "with_rsg")
MEASURES = ("error", "many", "medium", "few")


def pair_folders(output_root: str, config: str, seed: int) -> dict:
    """The seed's three run folders, below the table runner's folder for `config` (a config outside
    configs/ by its file name)."""
    inside = not os.path.relpath(os.path.abspath(config), os.path.join(ROOT, "configs")).startswith("..")
    base = (run_dir(output_root, os.path.relpath(os.path.abspath(config), ROOT), seed) if inside else
            os.path.join(output_root, os.path.splitext(os.path.basename(config))[0], f"seed{seed}"))
    return {name: os.path.join(base, name) for name in ("shared",) + BRANCHES}


def repository_path(path: str) -> str:
    """A config path given from the caller's folder, as the repository root sees it."""
    path = from_caller(path)
    inside = os.path.isabs(path) and not os.path.relpath(path, ROOT).startswith("..")
    return os.path.relpath(path, ROOT) if inside else path


def check_pair(with_config: str, without_config: str, overrides: list) -> int:
    """T_th of the pair; a UserError when the two configs differ in more than RSG's settings."""
    with_rsg = load_config(os.path.join(ROOT, with_config), overrides)
    without = load_config(os.path.join(ROOT, without_config), overrides + ([] if without_config != with_config
                                                                             else ["rsg.enabled=false"]))
    if not with_rsg.rsg.enabled or without.rsg.enabled:
        raise UserError(f"{with_config} must have RSG on and {without_config} off (rsg.enabled)")
    threshold = with_rsg.rsg.threshold_epoch
    if not 0 < threshold < with_rsg.train.epochs:
        raise UserError(f"{with_config}: rsg.threshold_epoch={threshold} must lie inside the training "
                        f"(1..{with_rsg.train.epochs - 1}) for a shared first stage")
    conflicts = branch_conflicts(config_to_dict(with_rsg), config_to_dict(without), threshold)
    if conflicts:
        raise UserError(f"{without_config} is not {with_config} without RSG: {'; '.join(conflicts)}")
    return threshold


def pair_commands(with_config: str, without_config: str, seed: int, output_root: str, overrides: list,
                  gpus: int = 1) -> list:
    """The train.py commands still to run for one seed, in order (shared stage, w/o, w/); a finished
    stage that differs from the requested config is refused (engine/continuation.py)."""
    threshold = check_pair(with_config, without_config, overrides)
    cfg = load_config(os.path.join(ROOT, with_config), overrides)
    folders = pair_folders(output_root, with_config, seed)
    branch_from = ["--branch-from", os.path.join(folders["shared"], "threshold.pt")]
    without_extra = ["rsg.enabled=false"] if without_config == with_config else []
    # The shared stage's own keys after the user's, which come last everywhere else: it stops at
    # T_th whatever train.epochs says (that is the branches' length).
    shared_last = [f"train.epochs={threshold}", f"name={cfg.name}{SHARED_STAGE_SUFFIX}"]
    stages = [("shared", with_config, [], [], shared_last, threshold),
              ("without_rsg", without_config, branch_from, without_extra, [], cfg.train.epochs),
              ("with_rsg", with_config, branch_from, [], [], cfg.train.epochs)]
    commands, differing = [], {}
    for stage, config, options, first, last, epochs in stages:
        run_overrides = [f"train.seed={seed}", f"output_dir={folders[stage]}", *first, *overrides, *last]
        if not run_finished(folders[stage], epochs):
            commands.append(train_launcher(gpus) + ["--config", config, "--resume", "auto", *options, *run_overrides])
            continue
        conflicts = finished_run_conflicts(folders[stage], load_config(os.path.join(ROOT, config), run_overrides))
        if conflicts:
            differing[folders[stage]] = conflicts
    refuse_differing_runs(differing)
    return commands


def final_numbers(folder: str):
    """{error, many, medium, few} of the run's final evaluation, or None when it has none."""
    from tools.collect_results import read_run, run_report

    if not os.path.isfile(os.path.join(folder, "config.yaml")):
        return None
    run = read_run(folder)
    report = run_report(run) if run.finished else None
    if report is None:
        return None
    return {"error": 100.0 - report["top1"], **{g: report[g] for g in ("many", "medium", "few")}}


def mean_std(values: list) -> str:
    if not values:
        return "-"
    text = f"{statistics.fmean(values):+.2f}"
    return text + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def summary(with_config: str, seeds, output_root: str) -> str:
    """The per-seed table: both branches' final numbers and their difference (w/ minus w/o)."""
    def cell(value):
        return "     -" if value is None else f"{value:6.2f}"

    header = "  ".join(f"{m:>6}" for m in MEASURES)
    lines = [f"final test numbers (%), {with_config}; diff = w/ RSG minus w/o RSG (error: negative = RSG better)",
             f"seed  w/o RSG: {header}  |  w/ RSG: {header}  |  diff: {header}"]
    differences = {m: [] for m in MEASURES}
    for seed in seeds:
        folders = pair_folders(output_root, with_config, seed)
        without, with_rsg = final_numbers(folders["without_rsg"]), final_numbers(folders["with_rsg"])
        if without is None or with_rsg is None:
            lines.append(f"{seed:4d}  not finished")
            continue
        diff = {m: None if with_rsg[m] is None or without[m] is None else with_rsg[m] - without[m] for m in MEASURES}
        for m in MEASURES:
            if diff[m] is not None:
                differences[m].append(diff[m])
        lines.append(f"{seed:4d}           {'  '.join(cell(without[m]) for m in MEASURES)}  |"
                     f"         {'  '.join(cell(with_rsg[m]) for m in MEASURES)}  |"
                     f"       {'  '.join(cell(diff[m]) for m in MEASURES)}")
    lines.append("diff mean ± std over seeds: " + ", ".join(f"{m} {mean_std(differences[m])}" for m in MEASURES))
    return "\n".join(lines)


def epoch_metrics(folder: str, generating_only: bool = False) -> list:
    """The `train` metrics of the recorded epochs of a run folder ([] when it has none); with
    `generating_only`, of the epochs from T_th on (a branch's metrics.jsonl starts with its parent's)."""
    from tools.collect_results import read_run

    if not os.path.isfile(os.path.join(folder, "config.yaml")):
        return []
    run = read_run(folder)
    first = run.config["rsg"]["threshold_epoch"] if generating_only else 0
    return [line["train"] for line in run.metrics if "train" in line and line["epoch"] >= first]


def always_different_rate(counts) -> float:
    """The contrastive module's accuracy when it always answers "different class" on pairs drawn
    from a training set with these class counts: 1 - sum of the squared class shares."""
    total = sum(counts)
    return 1.0 - sum((n / total) ** 2 for n in counts)


# (label, metrics key) of RSG's internals read from the with-RSG branch (rsg/module.py, diagnostics)
GENERATION_READINGS = (("generated/step", "generated_per_step"), ("L_MV direction", "rsg_mv_direction"),
                       ("L_MV length", "rsg_mv_length"), ("L_MV contrast", "rsg_mv_contrast"),
                       ("cos(T(x_fd-freq), x_fd-rare)", "rsg_cosine_transformed_rare"),
                       ("||x_fd-rare||", "rsg_norm_fd_rare"), ("spread of generated", "rsg_spread_generated"),
                       ("centers used per class", "rsg_centers_used"))


def pair_training_counts(with_config: str, seeds, output_root: str):
    """The training class counts of the pair's runs (the first folder that has them), or None."""
    from engine.run_folder import training_counts

    folders = [f for seed in seeds for f in pair_folders(output_root, with_config, seed).values()]
    return next((counts for counts in map(training_counts, folders) if counts is not None), None)


def diagnostics(with_config: str, seeds, output_root: str, counts=None) -> str:
    """RSG's internals per seed: the shared stage at T_th (center use, the contrastive module's
    accuracy against always answering "different"), then the with-RSG branch's first and last
    epoch (generation, the L_MV terms, where the generated samples lie)."""
    def value(metrics, key):
        number = metrics.get(key)
        return "-" if number is None else f"{number:.3f}" if abs(number) < 10 else f"{number:.1f}"

    lines = [f"RSG's internals, {with_config} (metrics.jsonl of each stage)"]
    baseline = f"; always 'different' would score {100 * always_different_rate(counts):.1f}%" if counts else ""
    for seed in seeds:
        folders = pair_folders(output_root, with_config, seed)
        shared, branch = epoch_metrics(folders["shared"]), epoch_metrics(folders["with_rsg"], generating_only=True)
        if not shared:
            lines.append(f"seed {seed}: no shared stage recorded")
            continue
        first, last = shared[0], shared[-1]
        lines.append(f"seed {seed}, shared stage ({len(shared)} epochs): centers used per class "
                     f"{value(first, 'rsg_centers_used')} -> {value(last, 'rsg_centers_used')}, center term "
                     f"{value(first, 'rsg_center_loss')} -> {value(last, 'rsg_center_loss')}, contrastive accuracy "
                     f"{100 * first.get('rsg_contrastive_accuracy', float('nan')):.1f}% -> "
                     f"{100 * last.get('rsg_contrastive_accuracy', float('nan')):.1f}%{baseline}")
        if branch:
            readings = ", ".join(f"{label} {value(branch[0], key)} -> {value(branch[-1], key)}"
                                 for label, key in GENERATION_READINGS)
            lines.append(f"seed {seed}, with-RSG branch ({len(branch)} epochs, first -> last): {readings}")
    return "\n".join(lines)


def per_class_differences(with_config: str, seeds, output_root: str) -> str:
    """Final per-class test accuracy, w/ minus w/o RSG, one line per seed (classes by index)."""
    from tools.collect_results import read_run

    lines = ["final per-class test accuracy, w/ minus w/o RSG (points; classes 0, 1, ...)"]
    for seed in seeds:
        folders = pair_folders(output_root, with_config, seed)
        finals = []
        for branch in ("with_rsg", "without_rsg"):
            path = os.path.join(folders[branch], "config.yaml")
            records = read_run(folders[branch]).metrics if os.path.isfile(path) else []
            finals.append(next((line["test_per_class"] for line in reversed(records) if line.get("test_per_class")),
                               None))
        if None in finals:
            lines.append(f"seed {seed}: not finished")
            continue
        lines.append(f"seed {seed}: " + " ".join("-" if a is None or b is None else f"{a - b:+.1f}"
                                                  for a, b in zip(*finals)))
    return "\n".join(lines)


def gpus_per_run(text: str) -> int:
    try:
        gpus = int(text)
    except ValueError:
        gpus = 0
    if gpus < 1:
        raise argparse.ArgumentTypeError(f"takes the GPUs per run, 1 or more (1: python train.py, which runs on "
                                         f"train.device, the CPU too); got {text!r}")
    return gpus


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
