"""Class-balanced weights from the effective number of samples (Cui et al. 2019)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def class_balanced_weights(class_counts: Sequence[int], beta: float = 0.9999) -> np.ndarray:
    """w_c = (1 - beta) / (1 - beta^{n_c}), rescaled so that the weights sum to C."""
    counts = np.asarray(class_counts, dtype=np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)
