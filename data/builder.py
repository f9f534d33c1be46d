"""From the `data` section of a config to (train, evaluation) datasets.

CIFAR, digits and image folders have a train and a test split; the training set is made
imbalanced by `data.profile`. Split lists (ImageNet-LT, Places-LT, iNaturalist 2018, split_list)
have train, val and test lists and come imbalanced (`data.profile: none`); `data.eval_split`
(or eval.py --split) picks the list that is evaluated. Each dataset registers beside its reader
(data/registry.py); this module only calls the one `data.name` names.
"""

from __future__ import annotations

from typing import Optional

from data.imbalance import check_every_class_trained, class_counts, imbalanced_counts, select_subset
from data.registry import DATASETS, LabelledDataset
from data.transforms import preset_eval_transform, preset_train_transform


def _transforms(data_cfg):
    """(train, eval) transforms: PIL images in, or uint8 tensors with data.decoder=torchvision."""
    tensors = data_cfg.decoder == "torchvision" and not DATASETS.info(data_cfg.name).get("in_memory")
    train = preset_train_transform(data_cfg.transform, data_cfg.image_size, data_cfg.crop_padding, data_cfg.hflip,
                                   data_cfg.mean, data_cfg.std, tensor_input=tensors)
    evaluation = preset_eval_transform(data_cfg.image_size, data_cfg.eval_resize, data_cfg.mean, data_cfg.std,
                                       tensor_input=tensors)
    return train, evaluation


def build_datasets(data_cfg, eval_split: Optional[str] = None) -> tuple[LabelledDataset, LabelledDataset]:
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


def build_eval_dataset(data_cfg, split: Optional[str] = None) -> LabelledDataset:
    """The `split` split alone (default data.eval_split), whole, for evaluating a checkpoint: its
    training counts come from the checkpoint, so the training split is never loaded (CIFAR's
    training batches may be absent; a split list's training list is read only for the number of
    classes and their names, its images never checked)."""
    _, eval_tf = _transforms(data_cfg)
    _, evaluation = DATASETS.get(data_cfg.name)(data_cfg, split or data_cfg.eval_split, None, eval_tf,
                                                with_train=False)
    return evaluation
