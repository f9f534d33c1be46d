"""Split-list datasets: ImageNet-LT, Places-LT, iNaturalist 2018, and any `path label` lists.

A list file has one `relative/path/to/image.jpg <integer label>` per line, paths relative to
`data.root` (docs/CHOICES.md, "Where the recipes and file formats come from"). iNaturalist 2018 may
instead be read from its official JSON (train2018.json / val2018.json: images[i].file_name,
annotations[j].category_id, matched by image id). Labels and class counts come from the lists
alone; no image is opened until training.

Checked when the lists are read, each failure a UserError naming the file and line:
a malformed line, a label outside [0, num_classes), a class without training images, and a
data.root under which none of the first ROOT_SAMPLE listed images exists. A missing or unreadable
image is reported when it is loaded (data/datasets.py), with the same file:line.

These datasets come long-tailed: the configs set `data.profile: none` (the subset step of the
CIFAR benchmarks is skipped). `split_list` with another profile subsamples its list like CIFAR.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from core.errors import UserError
from data.datasets import FileDataset, ListOrigin
from data.imbalance import check_every_class_trained
from data.registry import DATASETS

ROOT_SAMPLE = 20   # listed images checked for existence when the lists are read


@dataclass(frozen=True)
class StandardSplits:
    """A dataset's list files (candidates in data.root, the first one present wins) and classes."""

    title: str
    train: tuple = ()
    val: tuple = ()
    test: tuple = ()
    num_classes: Optional[int] = None    # None: inferred from the training list


INAT_TRAIN = ("iNaturalist18_train.txt", "train2018.json")
INAT_VAL = ("iNaturalist18_val.txt", "val2018.json")

STANDARD_SPLITS = {
    "imagenet_lt": StandardSplits("ImageNet-LT", ("ImageNet_LT_train.txt",), ("ImageNet_LT_val.txt",),
                                  ("ImageNet_LT_test.txt",), 1000),
    "places_lt": StandardSplits("Places-LT", ("Places_LT_train.txt",), ("Places_LT_val.txt",),
                                ("Places_LT_test.txt",), 365),
    # The validation set is iNaturalist's test set: `val` and `test` read the same file.
    "inat2018": StandardSplits("iNaturalist 2018", INAT_TRAIN, INAT_VAL, INAT_VAL, 8142),
    "split_list": StandardSplits("split_list"),
}

PLACES_LAYOUTS = ("Places-LT lists circulate in two path layouts, 'train/airfield/00004851.jpg' (Places365-"
                  "Standard's train/ folder) and 'data_256/a/airfield/00000001.jpg' (the data_256 archive): "
                  "data.root is the folder that holds the first folder of the list's paths")


@dataclass
class SplitList:
    """One split as listed: relative paths, labels (N,) int64, where each came from, class names."""

    paths: list
    labels: np.ndarray
    origin: ListOrigin
    names: dict = field(default_factory=dict)   # label -> name, when the file has them (iNaturalist JSON)


# ---------------------------------------------------------------------------------------------
# Finding and reading the files


def list_file(data_cfg, split: str) -> str:
    """Path of the list file of `split`: data.<split>_list (relative to data.root, or absolute), or
    the dataset's standard file in data.root."""
    key = f"data.{split}_list"
    value = getattr(data_cfg, f"{split}_list")
    if value:
        path = value if os.path.isabs(value) else os.path.join(data_cfg.root, value)
        if not os.path.isfile(path):
            raise UserError(f"key '{key}': list file {path} not found (relative paths are read from data.root "
                            f"{data_cfg.root!r})")
        return path
    standard = STANDARD_SPLITS[data_cfg.name]
    candidates = getattr(standard, split)
    if not candidates:
        raise UserError(f"key '{key}' is empty: data.name split_list needs the {split} list file "
                        f"(lines 'relative/path.jpg <label>')")
    for name in candidates:
        path = os.path.join(data_cfg.root, name)
        if os.path.isfile(path):
            return path
    raise UserError(f"no {standard.title} {split} list in data.root {data_cfg.root!r}: expected "
                    f"{' or '.join(candidates)} there; download the lists and put them there, or set {key}")


def read_split(path: str) -> SplitList:
    """A `.json` file in iNaturalist's format, anything else a `path label` list."""
    if path.lower().endswith(".json"):
        return read_inaturalist_json(path)
    return read_list_file(path)


def read_list_file(path: str) -> SplitList:
    """Lines 'relative/path.jpg <int label>' (the path may hold spaces; blank lines are skipped)."""
    paths, labels, numbers = [], [], []
    for number, relative, label in list_entries(path):
        paths.append(relative)
        labels.append(label)
        numbers.append(number)
    if not paths:
        raise UserError(f"{path} lists no image; expected lines 'relative/path.jpg <integer label>'")
    return SplitList(paths, np.asarray(labels, dtype=np.int64), ListOrigin(path, np.asarray(numbers, dtype=np.int64)))


def list_entries(path: str):
    """(line number, relative path, label) of each listed image, read lazily, so that a reader that
    needs only the first lines (eval.py's class names) stops there. Lines are split as
    str.splitlines splits the whole text, so the numbers are the editor's line numbers."""
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for physical in f:
                for line in physical.splitlines():
                    number += 1
                    fields = line.strip().rsplit(None, 1)
                    if not fields:
                        continue
                    label = _integer(fields[1]) if len(fields) == 2 else None
                    if label is None:
                        raise UserError(f"{path}:{number}: expected 'relative/path.jpg <integer label>', got "
                                        f"{line.strip()!r}")
                    yield number, fields[0], label
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not a UTF-8 text list ({error}); expected lines "
                        f"'relative/path.jpg <label>'") from None


def _integer(text: str) -> Optional[int]:
    """The label of a line, or None when it is not a plain (optionally negative) decimal integer."""
    digits = text[1:] if text.startswith("-") else text
    return int(text) if digits.isascii() and digits.isdigit() else None


def read_inaturalist_json(path: str) -> SplitList:
    """iNaturalist's train2018.json / val2018.json: each image's label is the category_id of the
    annotation whose image_id is the image's id (never matched by position)."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) \
            or not isinstance(content.get("annotations"), list):
        raise UserError(f"{path}: expected iNaturalist's format, a JSON object with 'images' and 'annotations' lists")
    label_of = {}
    for index, annotation in enumerate(content["annotations"]):
        image_id, category = _fields(annotation, ("image_id", "category_id"), f"{path}: annotations[{index}]")
        if image_id in label_of:
            raise UserError(f"{path}: annotations[{index}]: image id {image_id} has a second annotation")
        label_of[image_id] = category
    paths, labels = [], []
    for index, image in enumerate(content["images"]):
        image_id, file_name = _fields(image, ("id", "file_name"), f"{path}: images[{index}]")
        if image_id not in label_of:
            raise UserError(f"{path}: images[{index}] (id {image_id}, {file_name}) has no annotation; "
                            f"an unlabelled file (test2018.json) can be neither trained nor evaluated on")
        paths.append(file_name)
        labels.append(label_of[image_id])
    if not paths:
        raise UserError(f"{path} lists no image")
    if not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        raise UserError(f"{path}: every category_id must be an integer")
    names = {c["id"]: str(c["name"]) for c in content.get("categories", [])
             if isinstance(c, dict) and isinstance(c.get("id"), int) and "name" in c}
    origin = ListOrigin(path, np.arange(len(paths), dtype=np.int64), json=True)
    return SplitList(paths, np.asarray(labels, dtype=np.int64), origin, names)


def _fields(entry, keys, where):
    if not isinstance(entry, dict) or any(key not in entry for key in keys):
        raise UserError(f"{where} needs the keys {', '.join(keys)}")
    return tuple(entry[key] for key in keys)


# ---------------------------------------------------------------------------------------------
# Checks


def check_labels(split: SplitList, num_classes: int, how: str) -> None:
    """Every label in [0, num_classes); `how` says where num_classes came from."""
    bad = np.flatnonzero((split.labels < 0) | (split.labels >= num_classes))
    if len(bad):
        first = int(bad[0])
        raise UserError(f"{split.origin.describe(first)}: label {split.labels[first]} is outside 0..{num_classes - 1} "
                        f"({how}; {len(bad)} such line(s) in the file)")


def check_root(split: SplitList, root: str, dataset_name: str) -> None:
    """Some of the first ROOT_SAMPLE listed images must exist under data.root; else say what is there."""
    sample = split.paths[:ROOT_SAMPLE]
    if any(os.path.isfile(os.path.join(root, path)) for path in sample):
        return
    example = os.path.join(root, sample[0])
    if os.path.isdir(root):
        entries = sorted(os.listdir(root))
        found = f"data.root holds {', '.join(entries[:6])}{', ...' if len(entries) > 6 else ''}" if entries else \
            "data.root is empty"
    else:
        found = "data.root does not exist"
    message = (f"data.root {root!r} matches none of the first {len(sample)} images of {split.origin.source} "
               f"(e.g. {example} does not exist; {found}); data.root must be the folder the list's paths are "
               f"relative to")
    if dataset_name in ("places_lt", "split_list"):
        message += f". {PLACES_LAYOUTS} (here {sample[0].split('/')[0]!r})"
    raise UserError(message)


# ---------------------------------------------------------------------------------------------
# Datasets


def configured_num_classes(data_cfg) -> Optional[tuple[int, str]]:
    """(C, how it was chosen) from data.num_classes or the dataset's standard count; None when C is
    to be inferred from the training list."""
    standard = STANDARD_SPLITS[data_cfg.name].num_classes
    if data_cfg.num_classes:
        return data_cfg.num_classes, f"data.num_classes is {data_cfg.num_classes}"
    if data_cfg.num_classes is None and standard is not None:
        return standard, (f"{STANDARD_SPLITS[data_cfg.name].title} has {standard} classes; set data.num_classes "
                          f"(0 = infer from the training list)")
    return None


def resolve_num_classes(data_cfg, train: SplitList) -> tuple[int, str]:
    """(C, how it was chosen): data.num_classes, else the dataset's standard count, else inferred."""
    configured = configured_num_classes(data_cfg)
    if configured is not None:
        return configured
    inferred = int(train.labels.max()) + 1
    return inferred, f"the training list {train.origin.source} has labels 0..{inferred - 1}"


def class_names(entries, num_classes: int, names: Optional[dict] = None) -> list:
    """Each class's name from (path, label) training entries: the JSON's category name (`names`),
    else the folder of its first training image (ImageNet's wnid, Places' scene), else its index.
    Stops reading `entries` once every class is named."""
    names = names or {}
    result = [str(c) for c in range(num_classes)]
    named = set()
    for path, label in entries:
        if 0 <= label < num_classes and label not in named:
            named.add(label)
            result[label] = names.get(label) or os.path.basename(os.path.dirname(path)) or str(label)
            if len(named) == num_classes:
                break
    return result


def training_classes(data_cfg) -> tuple[int, str, list]:
    """(C, how it was chosen, class names) from the training list, read only as far as these need:
    whole when C is inferred from it (or it is iNaturalist's JSON), else until every class is named.
    For evaluation, where the training counts come from the checkpoint."""
    path = list_file(data_cfg, "train")
    configured = configured_num_classes(data_cfg)
    if configured is None or path.lower().endswith(".json"):
        train = read_split(path)
        num_classes, how = resolve_num_classes(data_cfg, train)
        return num_classes, how, class_names(zip(train.paths, train.labels.tolist()), num_classes, train.names)
    entries = ((relative, label) for _, relative, label in list_entries(path))
    return (*configured, class_names(entries, configured[0]))


def file_dataset(data_cfg, split: SplitList, transform, classes) -> FileDataset:
    paths = [os.path.join(data_cfg.root, path) for path in split.paths]
    return FileDataset(paths, split.labels, transform, classes, decoder=data_cfg.decoder,
                       skip_corrupt=data_cfg.skip_corrupt, origin=split.origin)


LISTS = "'path label' list files, paths relative to data.root"


@DATASETS.register("imagenet_lt", split_lists=True, long_tailed=True, num_classes=1000,
                   help=f"ImageNet-LT (Liu et al. 2019): 1000 classes, {LISTS}")
@DATASETS.register("places_lt", split_lists=True, long_tailed=True, num_classes=365,
                   help=f"Places-LT (Liu et al. 2019): 365 classes, {LISTS}")
@DATASETS.register("inat2018", split_lists=True, long_tailed=True, num_classes=8142,
                   help=f"iNaturalist 2018: 8142 classes, {LISTS} or its train2018.json / val2018.json")
@DATASETS.register("split_list", split_lists=True, help=f"any dataset given as {LISTS} (data.train_list ...)")
def load_split_list_datasets(data_cfg, eval_split: str, train_transform, eval_transform,
                             with_train=True) -> tuple[Optional[FileDataset], FileDataset]:
    """(train, evaluation) FileDatasets of the lists; evaluation is the `eval_split` split.
    with_train=False: (None, evaluation), the training list read only for the classes."""
    if not with_train:
        return None, load_evaluation_split(data_cfg, eval_split, eval_transform)
    train = read_split(list_file(data_cfg, "train"))
    num_classes, how = resolve_num_classes(data_cfg, train)
    check_labels(train, num_classes, how)
    check_every_class_trained(np.bincount(train.labels, minlength=num_classes), train.origin.source,
                              "check data.num_classes (0 = infer from this list) or the list")
    evaluation = read_split(list_file(data_cfg, eval_split))
    check_labels(evaluation, num_classes, how)
    for split in (train, evaluation):
        check_root(split, data_cfg.root, data_cfg.name)
    classes = class_names(zip(train.paths, train.labels.tolist()), num_classes, train.names)
    return file_dataset(data_cfg, train, train_transform, classes), file_dataset(data_cfg, evaluation,
                                                                                 eval_transform, classes)


def load_evaluation_split(data_cfg, split_name: str, transform) -> FileDataset:
    """The `split_name` list alone, checked as in training (labels in 0..C-1, data.root)."""
    num_classes, how, classes = training_classes(data_cfg)
    evaluation = read_split(list_file(data_cfg, split_name))
    check_labels(evaluation, num_classes, how)
    check_root(evaluation, data_cfg.root, data_cfg.name)
    return file_dataset(data_cfg, evaluation, transform, classes)

