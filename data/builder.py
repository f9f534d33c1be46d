"""From the `data` section of a config to (train, evaluation) datasets.

CIFAR, digits and image folders have a train and a test split; the training set is made
imbalanced by `data.profile`. Split lists (ImageNet-LT, Places-LT, iNaturalist 2018, split_list)
have train, val and test lists and come imbalanced (`data.profile: none`); `data.eval_split`
(or eval.py --split) picks the list that is evaluated.
"""

from __future__ import annotations

import os
from typing import Optional

from core.errors import UserError
from data import split_lists  # noqa: F401  (registers the split-list datasets)
from data.cifar import load_cifar
from data.datasets import ArrayDataset, FileDataset
from data.digits import load_digits_split
from data.image_folder import check_same_classes, class_folders, scan_image_folder
from data.imbalance import check_every_class_trained, class_counts, imbalanced_counts, select_subset
from data.registry import DATASETS
from data.transforms import preset_eval_transform, preset_train_transform


def _transforms(data_cfg):
    """(train, eval) transforms: PIL images in, or uint8 tensors with data.decoder=torchvision."""
    tensors = data_cfg.decoder == "torchvision" and not DATASETS.info(data_cfg.name).get("in_memory")
    train = preset_train_transform(data_cfg.transform, data_cfg.image_size, data_cfg.crop_padding, data_cfg.hflip,
                                   data_cfg.mean, data_cfg.std, tensor_input=tensors)
    evaluation = preset_eval_transform(data_cfg.image_size, data_cfg.eval_resize, data_cfg.mean, data_cfg.std,
                                       tensor_input=tensors)
    return train, evaluation


def _only_test(data_cfg, split: str) -> None:
    if split != "test":
        raise UserError(f"the {split} split was asked for, but data.name {data_cfg.name} has only train and test "
                        f"splits; use the test split (data.eval_split=test, eval.py --split test)")


@DATASETS.register("cifar10", in_memory=True, max_per_class=5000)
@DATASETS.register("cifar100", in_memory=True, max_per_class=500)
def load_cifar_splits(data_cfg, split, train_tf, test_tf, with_train=True):
    _only_test(data_cfg, split)
    if data_cfg.image_size != 32:
        raise UserError(f"key 'data.image_size' is {data_cfg.image_size}; CIFAR images are 32 x 32")
    test_images, test_targets, classes = load_cifar(data_cfg.root, data_cfg.name, False, data_cfg.download)
    test = ArrayDataset(test_images, test_targets, test_tf, classes)
    if not with_train:
        return None, test
    images, targets, _ = load_cifar(data_cfg.root, data_cfg.name, True, data_cfg.download)
    return ArrayDataset(images, targets, train_tf, classes), test


@DATASETS.register("digits", in_memory=True, max_per_class=140)
def load_digits_splits(data_cfg, split, train_tf, test_tf, with_train=True):
    _only_test(data_cfg, split)
    test_images, test_targets, classes = load_digits_split(False, data_cfg.image_size)
    test = ArrayDataset(test_images, test_targets, test_tf, classes)
    if not with_train:
        return None, test
    images, targets, _ = load_digits_split(True, data_cfg.image_size)
    return ArrayDataset(images, targets, train_tf, classes), test


@DATASETS.register("image_folder")
def load_image_folder_splits(data_cfg, split, train_tf, test_tf, with_train=True):
    _only_test(data_cfg, split)
    test_paths, test_targets, test_classes = scan_image_folder(os.path.join(data_cfg.root, "test"))
    files = dict(decoder=data_cfg.decoder, skip_corrupt=data_cfg.skip_corrupt)
    if not with_train:
        # Labels are positions among the sorted class folders: a test folder whose names differ from
        # train's would shift them silently. Only the names are read (no image of train/ is listed).
        train_root = os.path.join(data_cfg.root, "train")
        if os.path.isdir(train_root):
            check_same_classes(class_folders(train_root), test_classes, data_cfg.root)
        return None, FileDataset(test_paths, test_targets, test_tf, test_classes, **files)
    paths, targets, classes = scan_image_folder(os.path.join(data_cfg.root, "train"))
    check_same_classes(classes, test_classes, data_cfg.root)
    return (FileDataset(paths, targets, train_tf, classes, **files),
            FileDataset(test_paths, test_targets, test_tf, classes, **files))


def build_datasets(data_cfg, eval_split: Optional[str] = None):
    """(train, evaluation): train is made imbalanced by data.profile (unless `none`); evaluation is
    the `eval_split` split (default data.eval_split), whole."""
    split = eval_split or data_cfg.eval_split
    train_tf, eval_tf = _transforms(data_cfg)
    full_train, evaluation = DATASETS.get(data_cfg.name)(data_cfg, split, train_tf, eval_tf)
    if data_cfg.profile == "none":
        return full_train, evaluation
    n_max = data_cfg.max_per_class or DATASETS.info(data_cfg.name).get("max_per_class")
    if n_max is None:  # an image folder or a list: its most populated class
        n_max = max(class_counts(full_train.targets, full_train.num_classes))
    counts = imbalanced_counts(n_max, full_train.num_classes, data_cfg.imbalance_ratio, data_cfg.profile)
    check_every_class_trained(counts, f"data.imbalance_ratio={data_cfg.imbalance_ratio:g} ({data_cfg.profile} "
                              f"profile, n_max {n_max})", "the rarest class keeps int(n_max / rho) images; lower "
                              "data.imbalance_ratio or raise data.max_per_class", full_train.classes)
    indices = select_subset(full_train.targets, counts, data_cfg.subset, data_cfg.subset_seed)
    return full_train.subset(indices), evaluation


def build_eval_dataset(data_cfg, split: Optional[str] = None):
    """The `split` split alone (default data.eval_split), whole, for evaluating a checkpoint: its
    training counts come from the checkpoint, so the training split is never loaded (CIFAR's
    training batches may be absent; a split list's training list is read only for the number of
    classes and their names, its images never checked)."""
    _, eval_tf = _transforms(data_cfg)
    _, evaluation = DATASETS.get(data_cfg.name)(data_cfg, split or data_cfg.eval_split, None, eval_tf,
                                                with_train=False)
    return evaluation
