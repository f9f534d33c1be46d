"""Top-1 accuracy overall, per class, and per shot group (many > 100, medium 20-100, few < 20)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

SHOT_GROUPS = ("many", "medium", "few")


# The shot groups of Liu et al. (2019), used by the paper's Tables 8 and 9: few < 20 <= medium <= 100 < many.
SHOT_BOUNDARIES = (20, 100)


def shot_group(train_count: int) -> str:
    few_below, many_above = SHOT_BOUNDARIES
    if train_count > many_above:
        return "many"
    if train_count >= few_below:
        return "medium"
    return "few"


def per_class_accuracy(predictions: np.ndarray, targets: np.ndarray, num_classes: int):
    """(correct (C,), total (C,)) counts from predicted and true labels (N,)."""
    total = np.bincount(targets, minlength=num_classes)
    correct = np.bincount(targets[predictions == targets], minlength=num_classes)
    return correct, total


def accuracy_report(predictions: np.ndarray, targets: np.ndarray, train_counts: Sequence[int]) -> dict:
    """Overall top-1 over all images; each group's accuracy is the mean of its classes' accuracies.

    Values are percentages; a group with no class (or no test image) is None.
    """
    num_classes = len(train_counts)
    correct, total = per_class_accuracy(predictions, targets, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(total > 0, correct / np.maximum(total, 1), np.nan) * 100
    report = {"top1": 100.0 * correct.sum() / max(total.sum(), 1), "per_class": class_acc.tolist()}
    groups = np.array([shot_group(n) for n in train_counts])
    for group in SHOT_GROUPS:
        values = class_acc[(groups == group) & (total > 0)]
        report[group] = float(values.mean()) if len(values) else None
    return report


def format_group_table(report: dict, title: Optional[str] = None) -> str:
    """The layout of the paper's Tables 8 and 9: Many | Medium | Few | All."""
    def cell(value):
        return f"{value:6.2f}" if value is not None else "     -"

    lines = [title] if title else []
    lines.append("  Many  Medium     Few     All")
    lines.append(f"{cell(report['many'])}  {cell(report['medium'])}  {cell(report['few'])}  {cell(report['top1'])}")
    return "\n".join(lines)
