"""From the `data` section of a config to (train, test) datasets with the imbalanced subset."""

from __future__ import annotations

import os

from data.cifar import load_cifar
from data.datasets import ArrayDataset, FileDataset
from data.digits import load_digits_split
from data.image_folder import check_same_classes, scan_image_folder
from data.imbalance import class_counts, imbalanced_counts, select_per_class
from data.transforms import eval_transform, train_transform
from engine.errors import UserError

# n_max of each dataset's long-tailed version when `data.max_per_class` is 0.
DEFAULT_MAX_PER_CLASS = {"cifar10": 5000, "cifar100": 500, "digits": 140}


def _transforms(data_cfg):
    train = train_transform(data_cfg.image_size, data_cfg.crop_padding, data_cfg.hflip, data_cfg.mean, data_cfg.std)
    return train, eval_transform(data_cfg.mean, data_cfg.std)


def _load_full(data_cfg, train_tf, test_tf):
    """The whole training set (before the imbalanced subset) and the test set."""
    if data_cfg.name in ("cifar10", "cifar100"):
        if data_cfg.image_size != 32:
            raise UserError(f"key 'data.image_size' is {data_cfg.image_size}; CIFAR images are 32 x 32")
        images, targets, classes = load_cifar(data_cfg.root, data_cfg.name, True, data_cfg.download)
        test_images, test_targets, _ = load_cifar(data_cfg.root, data_cfg.name, False, data_cfg.download)
        return (ArrayDataset(images, targets, train_tf, classes),
                ArrayDataset(test_images, test_targets, test_tf, classes))
    if data_cfg.name == "digits":
        images, targets, classes = load_digits_split(True, data_cfg.image_size)
        test_images, test_targets, _ = load_digits_split(False, data_cfg.image_size)
        return (ArrayDataset(images, targets, train_tf, classes),
                ArrayDataset(test_images, test_targets, test_tf, classes))
    paths, targets, classes = scan_image_folder(os.path.join(data_cfg.root, "train"))
    test_paths, test_targets, test_classes = scan_image_folder(os.path.join(data_cfg.root, "test"))
    check_same_classes(classes, test_classes, data_cfg.root)
    return FileDataset(paths, targets, train_tf, classes), FileDataset(test_paths, test_targets, test_tf, classes)


def build_datasets(data_cfg):
    """(train, test): train is the long-tailed (or step) subset; test is the full test set."""
    train_tf, test_tf = _transforms(data_cfg)
    full_train, test = _load_full(data_cfg, train_tf, test_tf)
    n_max = data_cfg.max_per_class or DEFAULT_MAX_PER_CLASS.get(data_cfg.name)
    if n_max is None:  # an image folder: its most populated class
        n_max = max(class_counts(full_train.targets, full_train.num_classes))
    counts = imbalanced_counts(n_max, full_train.num_classes, data_cfg.imbalance_ratio, data_cfg.profile)
    indices = select_per_class(full_train.targets, counts, data_cfg.subset_seed)
    return full_train.subset(indices), test
