"""The results of a paired design (tools/rsg_pair.py --report): both branches' numbers per seed at
the final epoch and at the best evaluated one, their differences, RSG's internals per seed, and the
per-class differences."""

from __future__ import annotations

import os
import statistics

from engine.run_folder import last_finished_epoch, training_counts
from tools.collect_results import mean_std, read_run, run_report
from tools.run_layout import pair_folders

MEASURES = ("error", "many", "medium", "few")


def epoch_numbers(folder: str, epoch: str = "final"):
    """{error, many, medium, few} of the run's final (or best) evaluation, or None when it has none."""
    if not os.path.isfile(os.path.join(folder, "config.yaml")):
        return None
    run = read_run(folder)
    report = run_report(run, epoch) if run.finished else None
    if report is None:
        return None
    return {"error": 100.0 - report["top1"], **{g: report[g] for g in ("many", "medium", "few")}}


# Student's t at 0.975 for 1..30 degrees of freedom (the usual table): a two-sided 95% interval
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
Z_975 = 1.959964


def t_quantile_975(degrees_of_freedom: int) -> float:
    """Student's t quantile at 0.975: the table up to 30 degrees of freedom, beyond it the expansion
    in 1/dof around the normal quantile (Abramowitz and Stegun 26.7.5), within 0.001 there."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {degrees_of_freedom}")
    if degrees_of_freedom <= len(T_975):
        return T_975[degrees_of_freedom - 1]
    z, n = Z_975, degrees_of_freedom
    return (z + (z ** 3 + z) / (4 * n) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * n ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * n ** 3))


def mean_interval_95(values: list):
    """(low, high) of the 95% t-interval of the mean of per-seed paired differences, or None under
    two values: how sure a mean difference over few seeds is, assuming the seeds' differences are
    independent draws around it."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean - half, mean + half


def summary(with_config: str, seeds, output_root: str) -> str:
    """The per-seed tables, at the final epoch and at the best one: both branches' numbers and their
    difference (w/ minus w/o)."""
    return "\n\n".join(epoch_summary(with_config, seeds, output_root, epoch) for epoch in ("final", "best"))


EPOCH_WORDS = {"final": "final epoch", "best": "best evaluated epoch of each run (chosen on the test set)"}


def epoch_summary(with_config: str, seeds, output_root: str, epoch: str) -> str:
    def cell(value):
        return "     -" if value is None else f"{value:6.2f}"

    header = "  ".join(f"{m:>6}" for m in MEASURES)
    lines = [f"test numbers (%) at the {EPOCH_WORDS[epoch]}, {with_config}; diff = w/ RSG minus w/o RSG "
             f"(error: negative = RSG better)",
             f"seed  w/o RSG: {header}  |  w/ RSG: {header}  |  diff: {header}"]
    differences = {m: [] for m in MEASURES}
    for seed in seeds:
        folders = pair_folders(output_root, with_config, seed)
        without, with_rsg = (epoch_numbers(folders[branch], epoch) for branch in ("without_rsg", "with_rsg"))
        ends = [last_finished_epoch(folders[branch]) for branch in ("without_rsg", "with_rsg")]
        if without is not None and with_rsg is not None and ends[0] != ends[1]:
            lines.append(f"{seed:4d}  not compared: the branches end at different epochs (w/o at {ends[0]}, w/ at "
                         f"{ends[1]}); train both to the same train.epochs")
            continue
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
    lines.append(f"{epoch} epoch, diff mean ± std over seeds: " + ", ".join(f"{m} {mean_std(differences[m])}" for m in MEASURES))
    interval = mean_interval_95(differences["error"])
    if interval is not None:
        lines.append(f"{epoch} epoch, error diff, 95% t-interval of the mean over {len(differences['error'])} seeds: "
                     f"{interval[0]:+.2f} to {interval[1]:+.2f}")
    return "\n".join(lines)


def epoch_metrics(folder: str, generating_only: bool = False) -> list:
    """The `train` metrics of the recorded epochs of a run folder ([] when it has none); with
    `generating_only`, of the epochs from T_th on (a branch's metrics.jsonl starts with its parent's)."""
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
