"""From the `data` section of a config to (train, evaluation) datasets.

CIFAR, digits and image folders have a train and a test split; the training set is made
imbalanced by `data.profile`. Split lists (ImageNet-LT, Places-LT, iNaturalist 2018, split_list)
have train, val and test lists and come imbalanced (`data.profile: none`); `data.eval_split`
(or eval.py --split) picks the list that is evaluated.
"""

from __future__ import annotations

import os
from typing import Optional

from data.cifar import load_cifar
from data.datasets import ArrayDataset, FileDataset
from data.digits import load_digits_split
from data.image_folder import check_same_classes, scan_image_folder
from data.imbalance import class_counts, imbalanced_counts, select_subset
from data.split_lists import SPLIT_LIST_DATASETS, load_split_list_datasets
from data.transforms import preset_eval_transform, preset_train_transform
from engine.errors import UserError

# n_max of each dataset's long-tailed version when `data.max_per_class` is 0.
DEFAULT_MAX_PER_CLASS = {"cifar10": 5000, "cifar100": 500, "digits": 140}
# Datasets held in memory as uint8 arrays: PIL transforms; data.decoder concerns files only.
ARRAY_DATASETS = ("cifar10", "cifar100", "digits")


def _transforms(data_cfg):
    """(train, eval) transforms: PIL images in, or uint8 tensors with data.decoder=torchvision."""
    tensors = data_cfg.decoder == "torchvision" and data_cfg.name not in ARRAY_DATASETS
    train = preset_train_transform(data_cfg.transform, data_cfg.image_size, data_cfg.crop_padding, data_cfg.hflip,
                                   data_cfg.mean, data_cfg.std, tensor_input=tensors)
    evaluation = preset_eval_transform(data_cfg.image_size, data_cfg.eval_resize, data_cfg.mean, data_cfg.std,
                                       tensor_input=tensors)
    return train, evaluation


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
    files = dict(decoder=data_cfg.decoder, skip_corrupt=data_cfg.skip_corrupt)
    return (FileDataset(paths, targets, train_tf, classes, **files),
            FileDataset(test_paths, test_targets, test_tf, classes, **files))


def build_datasets(data_cfg, eval_split: Optional[str] = None):
    """(train, evaluation): train is made imbalanced by data.profile (unless `none`); evaluation is
    the `eval_split` split (default data.eval_split), whole."""
    split = eval_split or data_cfg.eval_split
    train_tf, eval_tf = _transforms(data_cfg)
    if data_cfg.name in SPLIT_LIST_DATASETS:
        full_train, evaluation = load_split_list_datasets(data_cfg, split, train_tf, eval_tf)
    elif split != "test":
        raise UserError(f"the {split} split was asked for, but data.name {data_cfg.name} has only train and test "
                        f"splits; use the test split (data.eval_split=test, eval.py --split test)")
    else:
        full_train, evaluation = _load_full(data_cfg, train_tf, eval_tf)
    if data_cfg.profile == "none":
        return full_train, evaluation
    n_max = data_cfg.max_per_class or DEFAULT_MAX_PER_CLASS.get(data_cfg.name)
    if n_max is None:  # an image folder or a list: its most populated class
        n_max = max(class_counts(full_train.targets, full_train.num_classes))
    counts = imbalanced_counts(n_max, full_train.num_classes, data_cfg.imbalance_ratio, data_cfg.profile)
    indices = select_subset(full_train.targets, counts, data_cfg.subset, data_cfg.subset_seed)
    return full_train.subset(indices), evaluation
