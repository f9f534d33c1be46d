"""The embedded quick-start dataset: scikit-learn's handwritten digits (no download needed).

load_digits() ships 1797 grayscale 8x8 images with values 0..16 in 10 classes. Per class, in
the original order, the last `test_per_class` images form a balanced test set and the rest form
the training pool, which an imbalance profile can then subsample like CIFAR.
With the default test_per_class=30 the training pools of classes 0..9 hold
148, 152, 147, 153, 151, 152, 151, 149, 144, 150 images (the smallest, class 8, has 144).
"""

from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from core.errors import UserError
from data.datasets import ArrayDataset
from data.registry import DATASETS, LabelledDataset, only_test_split

NUM_CLASSES = 10
MAX_PIXEL_VALUE = 16  # load_digits stores intensities 0..16


def load_digits_split(train: bool, image_size: int = 16,
                      test_per_class: int = 30) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """One deterministic split of the digits dataset as RGB-like uint8 images.

    Args:
        train: the training pool if True, else the balanced test set.
        image_size: S, the side of the returned square images (bilinear resize from 8x8).
        test_per_class: images per class held out for testing (the last ones of each class).

    Returns:
        images: uint8 (N, S, S, 3), gray replicated to 3 channels, values 0..255.
        targets: int64 (N,), grouped in original dataset order.
        classes: ["0", ..., "9"].
    """
    if image_size < 1:
        raise UserError(f"digits image_size must be >= 1, got {image_size}")
    raw_images, labels = _load_raw_digits()
    indices = _split_indices(labels, train, test_per_class)
    images = _to_rgb_uint8(raw_images[indices], image_size)
    return images, labels[indices].astype(np.int64), [str(c) for c in range(NUM_CLASSES)]


def _load_raw_digits() -> Tuple[np.ndarray, np.ndarray]:
    """float (1797, 8, 8) images with values 0..16 and int (1797,) labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise UserError("the digits quick-start dataset needs scikit-learn; run `pip install scikit-learn`") from error
    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)


def _split_indices(labels: np.ndarray, train: bool, test_per_class: int) -> np.ndarray:
    """Sorted indices of the split: per class, the last test_per_class samples are the test set."""
    chosen = []
    for class_index in range(NUM_CLASSES):
        members = np.flatnonzero(labels == class_index)
        if not 1 <= test_per_class < len(members):
            raise UserError(f"digits test_per_class must be in 1..{len(members) - 1} "
                            f"(class {class_index} has {len(members)} images), got {test_per_class}")
        cut = len(members) - test_per_class
        chosen.append(members[:cut] if train else members[cut:])
    return np.sort(np.concatenate(chosen))


def _to_rgb_uint8(raw_images: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 8, 8) floats 0..16 -> uint8 (N, S, S, 3) via PIL bilinear resize."""
    gray = np.rint(raw_images * 255.0 / MAX_PIXEL_VALUE).clip(0, 255).astype(np.uint8)
    resized = np.stack([_resize_gray(image, image_size) for image in gray])
    # Replicating gray to 3 channels lets the same RGB models and transforms serve every dataset.
    return np.ascontiguousarray(np.repeat(resized[..., None], 3, axis=-1))


def _resize_gray(image: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (8, 8) -> uint8 (S, S) with PIL bilinear interpolation."""
    resized = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


@DATASETS.register("digits", in_memory=True, max_per_class=140, num_classes=NUM_CLASSES, reads_root=False,
                   help="scikit-learn's handwritten digits (embedded, no download): 10 classes, the quick start")
def load_digits_splits(data_cfg, split, train_tf, test_tf,
                       with_train=True) -> tuple[Optional[LabelledDataset], LabelledDataset]:
    only_test_split(data_cfg, split)
    test_images, test_targets, classes = load_digits_split(False, data_cfg.image_size)
    test = ArrayDataset(test_images, test_targets, test_tf, classes)
    if not with_train:
        return None, test
    images, targets, _ = load_digits_split(True, data_cfg.image_size)
    return ArrayDataset(images, targets, train_tf, classes), test
