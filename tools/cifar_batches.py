"""Write an image-folder copy of CIFAR-10 back as CIFAR-10's python batches, in CIFAR's own order.

    python scripts/write_cifar_batches.py IMAGE_ROOT LABELS_JSON OUT_ROOT

IMAGE_ROOT holds train/<class>/* and test/<class>/* (class folders sorted by name give CIFAR-10's
label indices). LABELS_JSON holds the `labels` list of each of CIFAR-10's six python batches, in file
order: {"labels": {"data_batch_1": [...], ..., "test_batch": [...]}}. Position i of batch b is given
the next image, in file-name order, of class labels[b][i], which restores CIFAR's file order when the
copy numbers each class's images in that order (`../shared/data/README.md` says how this was checked
for the JPEG copy). Code that selects images by their index in CIFAR's arrays (LDAM-DRW's seeded
per-class shuffle, `data.subset: ldam_drw`, torchvision's CIFAR10) then sees the same images as it
would on the original files.

OUT_ROOT/cifar-10-batches-py/ receives data_batch_1..5, test_batch and batches.meta as the original
files lay them out (dicts with 'batch_label', 'labels', 'data' as uint8 (10000, 3072) rows of R, G, B
planes, 'filenames'; pickle protocol 2, str keys, so that both torchvision's latin-1 reader and this
project's reader take them). The pixels are decoded as the project's image-folder loader decodes them
(`data.decoder: torchvision`). Their md5 sums are not the originals', so torchvision's own CIFAR10
class refuses them unless its integrity check is bypassed (docs/REPRODUCTION.md says how the authors'
code was fed).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from typing import Dict, List, Sequence

import numpy as np

from core.errors import UserError
from data.decoding import UnreadableImage, read_tensor
from data.image_folder import check_same_classes, scan_image_folder
from engine.exits import CommandLine, reports_user_errors

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
FOLDER = "cifar-10-batches-py"
SIDE = 32


def read_batch_labels(path: str) -> Dict[str, List[int]]:
    """The `labels` mapping of LABELS_JSON, every batch present and a list of ints."""
    try:
        with open(path) as handle:
            labels = json.load(handle)["labels"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"cannot read the batch labels from {path} ({type(error).__name__}: {error}); "
                        f"it must be JSON with a 'labels' mapping of batch name to label list") from None
    missing = [name for name in TRAIN_BATCHES + TEST_BATCHES if name not in labels]
    if missing:
        raise UserError(f"{path} has no labels for {', '.join(missing)}; it must list all six CIFAR-10 batches")
    return {name: [int(label) for label in labels[name]] for name in TRAIN_BATCHES + TEST_BATCHES}


def images_by_class(split_root: str) -> tuple[List[List[str]], List[str]]:
    """Per class index, that class's image paths in file-name order (the image folder's listing);
    the class names."""
    paths, targets, classes = scan_image_folder(split_root)
    per_class: List[List[str]] = [[] for _ in classes]
    for path, target in zip(paths, targets):
        per_class[target].append(path)
    return per_class, classes


def assign_in_cifar_order(per_class: Sequence[Sequence[str]], batch_labels: Sequence[Sequence[int]],
                          split_root: str) -> List[List[str]]:
    """For each batch, the image path at each position: the next unused image of that position's class.

    Every image of the split is used exactly once, so a class with more or fewer images than the
    labels ask for is refused, naming the class and both counts."""
    asked = np.bincount(np.concatenate([np.asarray(b, dtype=np.int64) for b in batch_labels]),
                        minlength=len(per_class))
    if len(asked) != len(per_class):
        raise UserError(f"the labels name {len(asked)} classes, {split_root} has {len(per_class)} class folders")
    for index, (paths, wanted) in enumerate(zip(per_class, asked)):
        if len(paths) != wanted:
            folder = os.path.dirname(paths[0]) if paths else f"class {index}"
            raise UserError(f"{folder} holds {len(paths)} images, CIFAR's labels ask for {wanted}; "
                            f"the image folder must be a whole copy of CIFAR-10's {os.path.basename(split_root)} split")
    next_unused = [0] * len(per_class)
    ordered = []
    for labels in batch_labels:
        batch = []
        for label in labels:
            batch.append(per_class[label][next_unused[label]])
            next_unused[label] += 1
        ordered.append(batch)
    return ordered


def pixel_rows(paths: Sequence[str]) -> np.ndarray:
    """uint8 (N, 3072): each image's R, G and B planes of 32 x 32, as CIFAR stores them."""
    rows = np.empty((len(paths), 3 * SIDE * SIDE), dtype=np.uint8)
    for index, path in enumerate(paths):
        try:
            image = read_tensor(path)
        except (FileNotFoundError, UnreadableImage) as error:
            raise UserError(f"cannot decode {path} ({error}); replace the file") from None
        if tuple(image.shape) != (3, SIDE, SIDE):
            raise UserError(f"{path} is {tuple(image.shape[1:])} pixels; CIFAR images are {SIDE} x {SIDE}")
        rows[index] = image.reshape(-1).numpy()
    return rows


def batch_content(name: str, paths: Sequence[str], labels: Sequence[int], split_root: str) -> dict:
    number = TRAIN_BATCHES.index(name) + 1 if name in TRAIN_BATCHES else 1
    total = len(TRAIN_BATCHES) if name in TRAIN_BATCHES else 1
    kind = "training" if name in TRAIN_BATCHES else "testing"
    return {"batch_label": f"{kind} batch {number} of {total}", "labels": list(labels),
            "data": pixel_rows(paths), "filenames": [os.path.relpath(p, split_root) for p in paths]}


def write_pickle(path: str, content: dict) -> str:
    """Write `content` atomically (a temporary file, then rename); its sha256."""
    data = pickle.dumps(content, protocol=2)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
    return hashlib.sha256(data).hexdigest()


def write_cifar10_batches(image_root: str, labels_path: str, out_root: str) -> Dict[str, str]:
    """Write OUT_ROOT/cifar-10-batches-py from the image folder; {file name: sha256}. Both splits
    are matched to the labels before any file is written."""
    labels = read_batch_labels(labels_path)
    folder = os.path.join(out_root, FOLDER)
    if os.path.exists(folder) and os.listdir(folder):
        raise UserError(f"{folder} exists and is not empty; choose another OUT_ROOT or remove it")
    planned, classes_of = [], {}
    for split, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
        split_root = os.path.join(image_root, split)
        per_class, classes_of[split] = images_by_class(split_root)
        ordered = assign_in_cifar_order(per_class, [labels[name] for name in names], split_root)
        planned.extend((name, paths, split_root) for name, paths in zip(names, ordered))
    check_same_classes(classes_of["train"], classes_of["test"], image_root)
    os.makedirs(folder, exist_ok=True)
    written = {name: write_pickle(os.path.join(folder, name), batch_content(name, paths, labels[name], split_root))
               for name, paths, split_root in planned}
    meta = {"label_names": classes_of["train"], "num_cases_per_batch": len(labels[TRAIN_BATCHES[0]]), "num_vis": 3 * SIDE * SIDE}
    written["batches.meta"] = write_pickle(os.path.join(folder, "batches.meta"), meta)
    return written


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("image_root", help="folder with train/<class>/* and test/<class>/*")
    parser.add_argument("labels_json", help="CIFAR-10's label order: {'labels': {batch name: [labels]}}")
    parser.add_argument("out_root", help="where cifar-10-batches-py/ is written (the value for data.root)")
    args = parser.parse_args(argv)
    written = write_cifar10_batches(args.image_root, args.labels_json, args.out_root)
    for name, digest in written.items():
        print(f"{os.path.join(args.out_root, FOLDER, name)}  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
