"""Figures of finished runs: per-class accuracy against training count, and RSG's features in 2-D.

Used by scripts/plot_per_class.py and scripts/plot_features.py. matplotlib is imported only when a
figure is drawn (`require_pyplot`), so training never needs it.
"""

from __future__ import annotations

import csv
import os
import textwrap
from typing import Optional

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from core.errors import UserError
from engine.metrics import SHOT_BOUNDARIES


def require_pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or a UserError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("the figures need matplotlib, which is not installed: pip install matplotlib "
                        "(it is listed in requirements.txt)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def log_figure(run_dir: str, tag: str, figure, step: int) -> None:
    """Add the figure to the run's TensorBoard folder (a new event file beside the training one)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(os.path.join(run_dir, "tensorboard")) as writer:
        writer.add_figure(tag, figure, global_step=step, close=False)


def save_figure(figure, out: str, run_dir: str, tag: str, step: int, dpi: int, tensorboard: bool) -> None:
    """The figure as a PNG file and, unless told not to, in the run's TensorBoard; says where."""
    figure.savefig(out, dpi=dpi)
    if tensorboard:
        log_figure(run_dir, tag, figure, step)
    print(f"wrote {out}" + (f" and added it to {run_dir}/tensorboard" if tensorboard else ""))


def read_run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise UserError(f"{run_dir} is not a run folder: no config.yaml (train.py writes one)")
    with open(path) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------------
# Per-class accuracy against training count


def per_class_csv(run_dir: str, checkpoint_name: Optional[str] = None, overrides=()) -> str:
    """The per-class CSV of the run's reported checkpoint on the test split, as eval.py writes it
    (<run>/<last|best>.per_class.csv); the checkpoint is evaluated only when the CSV is missing or
    older than it. The reported checkpoint: last.pt (CIFAR: the final epoch), best.pt for runs
    that select on the validation list."""
    from engine.evaluation import evaluate_checkpoint

    config = read_run_config(run_dir)
    name = checkpoint_name or ("best" if config["data"].get("eval_split") == "val" else "last")
    checkpoint = os.path.join(run_dir, f"{name}.pt")
    path = os.path.join(run_dir, f"{name}.per_class.csv")
    if not os.path.isfile(path) or (os.path.isfile(checkpoint) and os.path.getmtime(path) < os.path.getmtime(checkpoint)):
        evaluate_checkpoint(checkpoint, list(overrides), path, split="test")
    return path


def read_per_class(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(training counts (C,), test accuracies (C,) in %) of the classes with test images."""
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["accuracy"] != ""]
    return (np.array([int(r["train_count"]) for r in rows]), np.array([float(r["accuracy"]) for r in rows]))


def binned_means(counts: np.ndarray, accuracies: np.ndarray, bins: int = 12):
    """Mean accuracy in log-spaced bins of the training count: (geometric centres, means)."""
    edges = np.geomspace(counts.min(), counts.max() * (1 + 1e-9), min(bins, len(np.unique(counts))) + 1)
    which = np.clip(np.digitize(counts, edges) - 1, 0, len(edges) - 2)
    used = np.unique(which)
    centres = np.array([np.exp(np.log(counts[which == b]).mean()) for b in used])
    return centres, np.array([accuracies[which == b].mean() for b in used])


def one_two_five_label(value: float, _=None) -> str:
    """Tick text on a log axis: plain numbers (20, not 2 x 10^1), and on the minor ticks only the
    1-2-5 ones (2, 5, 20, 50, ...), so that neighbours never run together ("60708090100")."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** np.floor(np.log10(value) + 1e-9), 6)
    return f"{value:g}" if leading in (1, 2, 5) else ""


def legend_beside(axes):
    """The legend to the right of the plotting area, where it covers no point or curve."""
    return axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def per_class_figure(series: list, title: str):
    """series: [(label, counts (C,), accuracies (C,))]; each a scatter of its classes and a line of
    its binned means, on a log-scale count axis with the shot-group boundaries."""
    plt = require_pyplot()
    figure, axes = plt.subplots(figsize=(9.5, 4.5))
    styles = [("tab:red", "o", "-"), ("tab:blue", "s", "--"), ("tab:green", "^", ":")]
    for (label, counts, accuracies), (colour, marker, line) in zip(series, styles):
        axes.scatter(counts, accuracies, s=14, alpha=0.45, color=colour, marker=marker)
        axes.plot(*binned_means(counts, accuracies), line, color=colour, linewidth=1.8, label=label)
    for boundary in SHOT_BOUNDARIES:
        axes.axvline(boundary, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(plt.FuncFormatter(one_two_five_label))
    axes.xaxis.set_minor_formatter(plt.FuncFormatter(one_two_five_label))
    axes.set_xlabel("training images of the class (log scale; dotted: few | medium | many at 20, 100)")
    axes.set_ylabel("test accuracy of the class (%)")
    axes.set_ylim(-3, 103)
    axes.set_title(textwrap.fill(title, 70), fontsize=10)   # long run names: wrap, never cut
    legend_beside(axes)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# RSG's features: real frequent, real rare and generated samples


def training_batches(cfg, train_set, epoch: int) -> DataLoader:
    """The training loader in the order training used at `epoch` (shuffle, or DRS's draws)."""
    from data.samplers import build_sampler

    sampler = build_sampler(cfg.data, train_set.targets, cfg.train.seed)
    sampler.set_epoch(epoch)
    return DataLoader(train_set, cfg.data.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.data.num_workers)


@torch.no_grad()
def rsg_features(model, loader, device, batches: int) -> dict[str, torch.Tensor]:
    """Pooled (global-average) features at RSG's input, {frequent, rare, generated}: (n, C) each,
    from `batches` training batches in train mode (RSG generates only there). A forward hook on
    RSG sees its input (features, targets) and its output, whose rows past the input's are the
    generated samples."""
    captured = {"frequent": [], "rare": [], "generated": []}

    def hook(rsg, inputs, output):
        features, targets = inputs
        pooled = features.float().mean(dim=(2, 3))                         # (N, C)
        frequent = rsg.is_frequent[targets]
        captured["frequent"].append(pooled[frequent].cpu())
        captured["rare"].append(pooled[~frequent].cpu())
        captured["generated"].append(output[0][len(features):].float().mean(dim=(2, 3)).cpu())   # (M, C)

    handle = model.rsg.register_forward_hook(hook)
    model.train()
    try:
        for index, (images, targets) in enumerate(loader):
            if index == batches:
                break
            model(images.to(device), targets.to(device))
    finally:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


def pca_2d(groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Project every group onto the top two principal axes of all of them together: (n, C) -> (n, 2)."""
    everything = torch.cat(list(groups.values()))
    mean = everything.mean(dim=0)
    _, _, vh = torch.linalg.svd(everything - mean, full_matrices=False)
    axes = vh[:2].T                                                          # (C, 2)
    return {name: (values - mean) @ axes for name, values in groups.items()}


def feature_figure(points: dict[str, torch.Tensor], title: str):
    plt = require_pyplot()
    figure, axes = plt.subplots(figsize=(8.0, 5.5))
    styles = {"frequent": dict(color="tab:grey", marker="o", s=10, alpha=0.4),
              "rare": dict(color="tab:blue", marker="^", s=22, alpha=0.8),
              "generated": dict(color="tab:red", marker="x", s=22, alpha=0.8)}
    for name, style in styles.items():
        xy = points[name].numpy()
        axes.scatter(xy[:, 0], xy[:, 1], label=f"{name} ({len(xy)})", **style)
    axes.set_xlabel("principal component 1")
    axes.set_ylabel("principal component 2")
    axes.set_title(textwrap.fill(title, 70), fontsize=10)   # long run names: wrap, never cut
    legend_beside(axes)
    figure.tight_layout()
    return figure
