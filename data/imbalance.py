"""Per-class sample counts for imbalanced training sets, and which samples make them up.

The counts follow the paper's section 4, "Datasets" (long-tailed or step profile, rho = n_max / n_min).
Which images of a class are kept is `data.subset` (the paper's tables mix two of them;
docs/REPRODUCTION.md, "Which CIFAR training subset each number came from"):

- first: the first n_i images of each class in the original file order. The RSG authors' code
  does this (its per-class shuffle is commented out): the paper's RSG rows were trained on it.
- ldam_drw: the subset of Cao et al.'s imbalance_cifar.py, index for index: numpy's legacy
  generator seeded once, then for each class in label order its indices shuffled and the first
  n_i kept. The paper's ERM, Focal, CB, M-DRW and LDAM-DRW rows are Cao et al.'s published numbers,
  trained on it. The two share about 63% of CIFAR-10-LT's images.
- seeded: this project's own seeded per-class permutation (numpy's default_rng), matching neither.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from core.errors import UserError

PROFILES = ("longtail", "step", "balanced")
SUBSETS = ("first", "ldam_drw", "seeded")
LDAM_DRW_SEED = 0       # imbalance_cifar.py's rand_number default (train.py --rand_number)


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


def check_every_class_trained(counts: Sequence[int], source: str, fix: str,
                              classes: Optional[Sequence[str]] = None) -> None:
    """Refuse a training set in which a class has no image: LDAM's margins and the class-balanced
    weights divide by its count, and its few-shot accuracy would be that of a class never trained.
    `source` says where the counts came from, `fix` how to change them; `classes` names them."""
    empty = [index for index, count in enumerate(counts) if count == 0]
    if not empty:
        return
    named = [f"{index} {classes[index]!r}" if classes else str(index) for index in empty[:5]]
    shown = ", ".join(named) + (", ..." if len(empty) > 5 else "")
    raise UserError(f"{source}: {len(empty)} of {len(counts)} classes have no training image (classes {shown}); "
                    f"every class needs one (LDAM margins and class-balanced weights divide by the count): {fix}")


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
        _check_enough(class_index, len(available), wanted)
        if rng is not None:
            # One permutation per class, drawn in class order, so the choice depends only on the seed.
            available = available[rng.permutation(len(available))]
        chosen.append(available[:wanted])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def resolve_subset(subset: str, subset_seed: Optional[int]) -> Tuple[str, Optional[int]]:
    """(data.subset, data.subset_seed) -> (subset, seed) with every default filled in.

    An old config's `subset_seed: 3` (before data.subset existed) still means the seeded pick with
    seed 3: `first` with a seed is read as `seeded`. For ldam_drw the seed is Cao et al.'s
    --rand_number (0 when unset); for seeded it is required.
    """
    if subset not in SUBSETS:
        raise UserError(f"unknown data.subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if subset == "first":
        return ("first", None) if subset_seed is None else ("seeded", subset_seed)
    if subset == "ldam_drw":
        return subset, LDAM_DRW_SEED if subset_seed is None else subset_seed
    if subset_seed is None:
        raise UserError("data.subset=seeded needs data.subset_seed (an integer), e.g. data.subset_seed=0")
    return subset, subset_seed


def select_subset(targets: Sequence[int], counts: Sequence[int], subset: str = "first",
                  subset_seed: Optional[int] = None) -> np.ndarray:
    """Indices of the training subset `subset` (see the module docstring and `resolve_subset`).

    Returns int64 (sum(counts),): first and seeded sorted ascending (the file order); ldam_drw in
    Cao et al.'s order (class by class, each in its shuffled order), so that sample i of the subset
    is sample i of their IMBALANCECIFAR10/100.
    """
    subset, seed = resolve_subset(subset, subset_seed)
    if subset == "ldam_drw":
        return select_like_ldam_drw(targets, counts, seed)
    return select_per_class(targets, counts, seed)


def select_like_ldam_drw(targets: Sequence[int], counts: Sequence[int], seed: int = LDAM_DRW_SEED) -> np.ndarray:
    """Cao et al.'s gen_imbalanced_data: `np.random.seed(seed)` once, then for each class c in label
    order `idx = np.where(targets == c)[0]; np.random.shuffle(idx); idx[:n_c]`.

    A private RandomState(seed) draws exactly what the seeded global generator draws (both are
    numpy's legacy Mersenne Twister, stable across numpy versions) without touching global state.
    Returns int64 (sum(counts),) in their order: class 0's picks in shuffled order, then class 1's...
    """
    labels = np.asarray(targets, dtype=np.int64).reshape(-1)
    generator = np.random.RandomState(seed)
    chosen = []
    for class_index, wanted in enumerate(counts):
        available = np.flatnonzero(labels == class_index)
        _check_enough(class_index, len(available), wanted)
        generator.shuffle(available)       # every class is shuffled, as there: the draws stay in step
        chosen.append(available[:wanted])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen).astype(np.int64)


def _check_enough(class_index: int, available: int, wanted: int) -> None:
    if available < wanted:
        raise UserError(f"class {class_index} has {available} samples but {wanted} were asked; "
                        f"lower n_max or the imbalance ratio")
