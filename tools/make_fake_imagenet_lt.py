"""Write a tiny dataset in the ImageNet-LT format (or Places-LT's, or iNaturalist 2018's) for smoke runs.

    python scripts/make_fake_imagenet_lt.py /tmp/fake_imagenet_lt
    python scripts/make_fake_imagenet_lt.py /tmp/fake_places --dataset places_lt --places-layout data_256
    python scripts/make_fake_imagenet_lt.py /tmp/fake_inat --dataset inat2018 --inat-json

Small JPEGs of a few classes, each class its own colour and stripe direction (learnable in an
epoch or two), with long-tailed training counts on both sides of the shot-group bounds 20 and 100
(default 150, 110, 60, 30, 15, 6: two many-, two medium-, two few-shot classes), and balanced
validation and test lists. The files and paths imitate the real datasets (docs/CHOICES.md,
"Where the recipes and file formats come from"):

    imagenet_lt  train/<wnid>/<wnid>_<k>.JPEG (train and val lists), val/<wnid>/ILSVRC2012_val_<k>.JPEG
                 (test list); ImageNet_LT_{train,val,test}.txt
    places_lt    train/<scene>/<k>.jpg or data_256/<s>/<scene>/<k>.jpg (--places-layout), test images
                 under val_256/; Places_LT_{train,val,test}.txt
    inat2018     train_val2018/<kingdom>/<category>/<hex>.jpg; iNaturalist18_{train,val}.txt, or with
                 --inat-json train2018.json / val2018.json (annotations in another order than images)

Then, for the ImageNet-LT format (6 classes, 32 px crops, ResNet-32, one epoch on the CPU):

    python train.py --config configs/imagenet_lt/resnext50_ldam_drs_rsg.yaml data.root=/tmp/fake_imagenet_lt \\
        data.num_classes=0 data.image_size=32 data.eval_resize=36 data.batch_size=32 data.num_workers=0 \\
        model.backbone=resnet32 rsg.position=default rsg.contrastive_channels=8 train.epochs=1 train.device=cpu \\
        output_dir=runs/fake_imagenet_lt
    python eval.py --checkpoint runs/fake_imagenet_lt/best.pt --split test
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from PIL import Image

from engine.exits import CommandLine, reports_user_errors

DEFAULT_COUNTS = (150, 110, 60, 30, 15, 6)
KINGDOMS = ("Plantae", "Animalia", "Fungi")


def class_image(rng, label: int, num_classes: int, width: int, height: int) -> Image.Image:
    """A hue per class, stripes whose direction depends on the class, and noise."""
    hue = np.array([np.cos(2 * np.pi * (label / num_classes + k / 3)) for k in range(3)]) * 90 + 128
    rows, cols = np.mgrid[0:height, 0:width]
    angle = np.pi * label / num_classes
    stripes = np.sin((rows * np.sin(angle) + cols * np.cos(angle)) / 2.5)[..., None] * 40
    pixels = hue[None, None, :] + stripes + rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def class_folders(dataset: str, num_classes: int) -> list:
    if dataset == "imagenet_lt":
        return [f"n{1440764 + 1000 * c:08d}" for c in range(num_classes)]
    if dataset == "places_lt":
        return [f"{chr(ord('a') + c % 26)}scene{c}" for c in range(num_classes)]
    return [f"{KINGDOMS[c % len(KINGDOMS)]}/{c}" for c in range(num_classes)]


def image_path(dataset: str, split: str, folder: str, label: int, index: int, places_layout: str) -> str:
    """The relative path of image `index` of class `label` in `split`, in the dataset's own style."""
    if dataset == "imagenet_lt":
        if split == "test":   # ImageNet-LT's test set is ILSVRC-2012 val, sorted into wnid folders
            return f"val/{folder}/ILSVRC2012_val_{label * 1000 + index:08d}.JPEG"
        return f"train/{folder}/{folder}_{index + (100000 if split == 'val' else 0)}.JPEG"
    if dataset == "places_lt":
        if split == "test":
            return f"val_256/{folder}/Places365_val_{label * 1000 + index:08d}.jpg"
        number = index + (500000 if split == "val" else 0)
        if places_layout == "data_256":
            return f"data_256/{folder[0]}/{folder}/{number:08d}.jpg"
        return f"train/{folder}/{number:08d}.jpg"
    digest = (label * 7919 + index * 104729) & 0xFFFFFFFF   # iNaturalist names files by a hex digest
    return f"train_val2018/{folder}/{digest:08x}{split[0]}.jpg"


LIST_NAMES = {
    "imagenet_lt": {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"},
    "places_lt": {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"},
    "inat2018": {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"},
}


def make_fake_dataset(root: str, counts=DEFAULT_COUNTS, val_per_class: int = 5, test_per_class: int = 10,
                      dataset: str = "imagenet_lt", places_layout: str = "train", inat_json: bool = False,
                      min_side: int = 32, max_side: int = 48, seed: int = 0) -> dict:
    """Write the images and lists under `root`; returns {split: list file path}.

    iNaturalist has train and val only (val is its test set); with inat_json the splits are
    train2018.json and val2018.json instead of list files.
    """
    rng = np.random.default_rng(seed)
    folders = class_folders(dataset, len(counts))
    per_class = {"train": list(counts), "val": [val_per_class] * len(counts), "test": [test_per_class] * len(counts)}
    splits = ("train", "val") if dataset == "inat2018" else ("train", "val", "test")
    written = {}
    for split in splits:
        entries = []
        for label, count in enumerate(per_class[split]):
            for index in range(count):
                relative = image_path(dataset, split, folders[label], label, index, places_layout)
                path = os.path.join(root, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                width, height = rng.integers(min_side, max_side + 1, size=2)
                class_image(rng, label, len(counts), int(width), int(height)).save(path, "JPEG", quality=90)
                entries.append((relative, label))
        order = rng.permutation(len(entries))   # real lists are not sorted by class
        entries = [entries[i] for i in order]
        if inat_json:
            written[split] = write_inaturalist_json(root, split, entries, folders, rng)
        else:
            written[split] = os.path.join(root, LIST_NAMES[dataset][split])
            with open(written[split], "w") as f:
                f.writelines(f"{relative} {label}\n" for relative, label in entries)
    return written


def write_inaturalist_json(root: str, split: str, entries: list, folders: list, rng) -> str:
    """train2018.json / val2018.json: images with ids, annotations in a shuffled order."""
    ids = rng.choice(10 * len(entries) + 10, size=len(entries), replace=False).tolist()
    images = [{"id": image_id, "file_name": relative, "width": 0, "height": 0}
              for image_id, (relative, _) in zip(ids, entries)]
    annotations = [{"id": k, "image_id": image_id, "category_id": label}
                   for k, (image_id, (_, label)) in enumerate(zip(ids, entries))]
    annotations = [annotations[i] for i in rng.permutation(len(annotations))]
    categories = [{"id": c, "name": f"species {c}", "kingdom": folder.split("/")[0]}
                  for c, folder in enumerate(folders)]
    path = os.path.join(root, f"{split}2018.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("root", help="folder to write (the value of data.root)")
    parser.add_argument("--dataset", default="imagenet_lt", choices=sorted(LIST_NAMES))
    parser.add_argument("--counts", type=int, nargs="+", default=list(DEFAULT_COUNTS),
                        help="training images per class (class 0 first)")
    parser.add_argument("--val-per-class", type=int, default=5)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--places-layout", default="train", choices=["train", "data_256"])
    parser.add_argument("--inat-json", action="store_true", help="iNaturalist: train2018.json / val2018.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = make_fake_dataset(args.root, args.counts, args.val_per_class, args.test_per_class, args.dataset,
                                args.places_layout, args.inat_json, seed=args.seed)
    for split, path in written.items():
        print(f"{split}: {path}")
    print(f"{len(args.counts)} classes, training counts {', '.join(map(str, args.counts))}; "
          f"set data.root={args.root} data.num_classes=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
