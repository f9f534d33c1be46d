"""Listing a user's own dataset laid out as root/<split>/<class>/<image>.

Only paths and labels are collected here; images are opened lazily by data.datasets.FileDataset.
Everything is sorted so that the class indices and sample order do not depend on the filesystem.
"""

import os
from typing import List, Optional, Sequence, Tuple

from core.errors import UserError
from data.datasets import FileDataset
from data.registry import DATASETS, LabelledDataset, only_test_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
EXPECTED_LAYOUT = "root/train/<class>/*.jpg and root/test/<class>/*.jpg"


def scan_image_folder(split_root: str) -> Tuple[List[str], List[int], List[str]]:
    """List the images of one split.

    Args:
        split_root: folder holding one subfolder per class, e.g. root/train.

    Returns:
        paths: N image paths, grouped by class (class order), sorted by file name within a class.
        targets: N class indices in 0..C-1.
        classes: C class names = sorted subfolder names; index i names class i.
    """
    if not os.path.isdir(split_root):
        raise UserError(f"image folder {split_root} does not exist; expected the layout {EXPECTED_LAYOUT}")
    classes = class_folders(split_root)
    if not classes:
        raise UserError(f"{split_root} has no class subfolders; expected the layout {EXPECTED_LAYOUT}")
    paths: List[str] = []
    targets: List[int] = []
    for class_index, class_name in enumerate(classes):
        class_paths = _images_in(os.path.join(split_root, class_name))
        paths.extend(class_paths)
        targets.extend([class_index] * len(class_paths))
    return paths, targets, classes


def _is_hidden(name: str) -> bool:
    """Dot-files (e.g. .DS_Store, ._foo.jpg from macOS) are never data."""
    return name.startswith(".")


def class_folders(split_root: str) -> List[str]:
    """Sorted names of the visible subfolders of split_root: the classes, index i naming class i."""
    return sorted(name for name in os.listdir(split_root)
                  if not _is_hidden(name) and os.path.isdir(os.path.join(split_root, name)))


def _images_in(class_folder: str) -> List[str]:
    """Sorted paths of the visible image files directly inside class_folder."""
    names = sorted(name for name in os.listdir(class_folder)
                   if not _is_hidden(name)
                   and name.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(class_folder, name)))
    if not names:
        raise UserError(f"class folder {class_folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                        f"add images or remove the folder")
    return [os.path.join(class_folder, name) for name in names]


def check_same_classes(train_classes: Sequence[str], test_classes: Sequence[str], root: str) -> None:
    """Raise UserError unless train and test define the same class names.

    Class indices come from sorted folder names, so any difference would silently shift labels.
    """
    train_set, test_set = set(train_classes), set(test_classes)
    if train_set == test_set:
        return
    only_train = sorted(train_set - test_set)
    only_test = sorted(test_set - train_set)
    raise UserError(f"train and test class folders differ under {root}: only in train {only_train}, "
                    f"only in test {only_test}; make root/train and root/test have the same class subfolders")


@DATASETS.register("image_folder", help="a folder of images per class: root/train/<class>/* and root/test/<class>/*")
def load_image_folder_splits(data_cfg, split, train_tf, test_tf,
                             with_train=True) -> tuple[Optional[LabelledDataset], LabelledDataset]:
    only_test_split(data_cfg, split)
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
