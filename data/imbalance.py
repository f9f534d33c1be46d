"""Per-class sample counts for imbalanced training sets, and the selection of those samples.

The long-tailed CIFAR benchmarks keep, for class i, the first n_i training images of that class
in the original file order. Keeping the file order (rather than sampling) makes the subset the
same on every machine and identical to the one used in the published results.
"""

from typing import List, Optional, Sequence

import numpy as np

from engine.errors import UserError

PROFILES = ("longtail", "step", "balanced")


def imbalanced_counts(n_max: int, num_classes: int, imbalance_ratio: float, profile: str) -> List[int]:
    """Number of training samples to keep for each class.

    Args:
        n_max: samples of the most frequent class (class 0), e.g. 5000 for CIFAR-10.
        num_classes: C, the number of classes.
        imbalance_ratio: rho = n_max / n_min, at least 1.
        profile: "longtail" (exponential decay from class 0 to class C-1),
            "step" (first C // 2 classes keep n_max, the rest n_max / rho) or "balanced".

    Returns:
        list of C ints; class 0 is the most frequent and classes are not shuffled.
    """
    if profile not in PROFILES:
        raise UserError(f"unknown imbalance profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if imbalance_ratio < 1:
        raise UserError(f"imbalance ratio must be >= 1 (n_max / n_min), got {imbalance_ratio}")
    if num_classes < 1 or n_max < 1:
        raise UserError(f"need at least one class and one sample per class, got "
                        f"num_classes={num_classes}, n_max={n_max}")
    if profile == "balanced":
        return [n_max] * num_classes
    if profile == "step":
        return _step_counts(n_max, num_classes, imbalance_ratio)
    return _longtail_counts(n_max, num_classes, imbalance_ratio)


def _longtail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> List[int]:
    """Exponential profile n_i = int(n_max * (1/rho) ** (i / (C - 1))), as in the reference sheet."""
    if num_classes == 1:
        # The exponent is undefined for a single class; it is simply the head class.
        return [n_max]
    last = num_classes - 1
    return [int(n_max * (1 / imbalance_ratio) ** (i / last)) for i in range(num_classes)]


def _step_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> List[int]:
    """First C // 2 classes keep n_max; the remaining ones get int(n_max / rho)."""
    num_head = num_classes // 2
    tail = int(n_max / imbalance_ratio)
    return [n_max] * num_head + [tail] * (num_classes - num_head)


def class_counts(targets: Sequence[int], num_classes: int) -> List[int]:
    """Number of samples of each class.

    Args:
        targets: (N,) class indices in [0, num_classes).
        num_classes: C.

    Returns:
        list of C ints.
    """
    labels = np.asarray(targets, dtype=np.int64).reshape(-1)
    return [int(n) for n in np.bincount(labels, minlength=num_classes)[:num_classes]]


def select_per_class(targets: Sequence[int], counts: Sequence[int],
                     shuffle_seed: Optional[int] = None) -> np.ndarray:
    """Indices of the samples to keep so that class c has exactly counts[c] samples.

    Args:
        targets: (N,) class index of each sample, in the original order.
        counts: (C,) how many samples to keep per class.
        shuffle_seed: None keeps the first counts[c] samples of class c in original order;
            an int picks them from a seeded per-class permutation instead.

    Returns:
        int64 array (sum(counts),) of indices into targets, sorted ascending so that the
        subset keeps the original sample order.
    """
    labels = np.asarray(targets, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    chosen = []
    for class_index, wanted in enumerate(counts):
        available = np.flatnonzero(labels == class_index)
        if len(available) < wanted:
            raise UserError(f"class {class_index} has {len(available)} samples but {wanted} were asked; "
                            f"lower n_max or the imbalance ratio")
        if rng is not None:
            # One permutation per class, drawn in class order, so the choice depends only on the seed.
            available = available[rng.permutation(len(available))]
        chosen.append(available[:wanted])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)
