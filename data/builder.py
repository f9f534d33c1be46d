"""From the `data` section of a config to (train, evaluation) datasets.

CIFAR, digits and image folders have a train and a test split; the training set is made
imbalanced by `data.profile`. Split lists (ImageNet-LT, Places-LT, iNaturalist 2018, split_list)
have train, val and test lists and come imbalanced (`data.profile: none`); `data.eval_split`
(or eval.py --split) picks the list that is evaluated. Each dataset registers beside its reader
(data/registry.py); this module only calls the one `data.name` names.
"""

from __future__ import annotations

from typing import Optional

from core.errors import UserError
from data.datasets import image_side_problems
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
    train = full_train if data_cfg.profile == "none" else imbalanced_subset(data_cfg, full_train)
    check_sizes_for_transforms(data_cfg, train, evaluation, split)
    return train, evaluation


def imbalanced_subset(data_cfg, full_train: LabelledDataset) -> LabelledDataset:
    """The training split made imbalanced by data.profile: n_i images of class i (data.subset picks which)."""
    n_max = data_cfg.max_per_class or DATASETS.info(data_cfg.name).get("max_per_class")
    if n_max is None:  # an image folder or a list: its most populated class
        n_max = max(class_counts(full_train.targets, full_train.num_classes))
    counts = imbalanced_counts(n_max, full_train.num_classes, data_cfg.imbalance_ratio, data_cfg.profile)
    check_every_class_trained(counts, f"data.imbalance_ratio={data_cfg.imbalance_ratio:g} ({data_cfg.profile} "
                              f"profile, n_max {n_max})", "the rarest class keeps int(n_max / rho) images; lower "
                              "data.imbalance_ratio or raise data.max_per_class", full_train.classes)
    indices = select_subset(full_train.targets, counts, data_cfg.subset, data_cfg.subset_seed)
    return full_train.subset(indices)


def check_sizes_for_transforms(data_cfg, train: Optional[LabelledDataset], evaluation: LabelledDataset,
                               split: str) -> None:
    """Image files the transforms cannot take, named before any training: pad_crop_flip's random crop
    needs each training image at least image_size - 2 * crop_padding on each side; with
    eval_resize 0 evaluation takes the images as they are, so each must be image_size x image_size
    (the size trained on; a batch stacks them). A 1 x 1 image or one test image of another size
    would otherwise stop the run after a whole epoch with a traceback."""
    size, padding = data_cfg.image_size, data_cfg.crop_padding
    checks = []
    if train is not None and data_cfg.transform == "pad_crop_flip":
        least = size - 2 * padding
        checks.append((train, "training", lambda w, h: min(w, h) >= least,
                       f"data.transform pad_crop_flip pads by {padding} and crops {size} x {size}, so every training "
                       f"image must be at least {least} x {least}; resize those files, or set data.transform="
                       f"resized_crop"))
    if data_cfg.eval_resize == 0:
        checks.append((evaluation, f"{split} (evaluation)", lambda w, h: (w, h) == (size, size),
                       f"with data.eval_resize 0 evaluation takes images as they are, so every one must be "
                       f"{size} x {size} (data.image_size, the size trained on); resize those files, or set "
                       f"data.eval_resize (e.g. {size}) to resize and centre-crop them"))
    for dataset, name, fits, requirement in checks:
        shown, count = image_side_problems(dataset, fits)
        if count:
            more = f" and {count - len(shown)} more" if count > len(shown) else ""
            raise UserError(f"the {name} split: {'; '.join(shown)}{more}: {requirement}")


def build_eval_dataset(data_cfg, split: Optional[str] = None) -> LabelledDataset:
    """The `split` split alone (default data.eval_split), whole, for evaluating a checkpoint: its
    training counts come from the checkpoint, so the training split is never loaded (CIFAR's
    training batches may be absent; a split list's training list is read only for the number of
    classes and their names, its images never checked)."""
    _, eval_tf = _transforms(data_cfg)
    split = split or data_cfg.eval_split
    _, evaluation = DATASETS.get(data_cfg.name)(data_cfg, split, None, eval_tf, with_train=False)
    check_sizes_for_transforms(data_cfg, None, evaluation, split)
    return evaluation
