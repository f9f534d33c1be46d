"""Reading CIFAR-10 / CIFAR-100 from torchvision's on-disk python format.

The files are pickled dicts written by Python 2 (keys are bytes). We read them directly instead of
going through torchvision.datasets.CIFAR10 so that the images come back as one uint8 array and
every problem with the files becomes a one-line UserError naming the file.
Like torchvision, this unpickles the files: only point it at CIFAR files you trust.
"""

import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from core.errors import UserError
from data.datasets import ArrayDataset
from data.registry import DATASETS, LabelledDataset, only_test_split

IMAGE_SIDE = 32
ROW_LENGTH = 3 * IMAGE_SIDE * IMAGE_SIDE  # one image: R plane, G plane, B plane of 32x32


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant lives on disk and how its pickles are keyed."""

    folder: str
    train_files: Tuple[str, ...]
    test_files: Tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    url: str
    md5: str


LAYOUTS = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def load_cifar(root: str, name: str, train: bool,
               download: bool = False) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Load one split of CIFAR-10 or CIFAR-100.

    Args:
        root: folder that contains cifar-10-batches-py/ or cifar-100-python/.
        name: "cifar10" or "cifar100".
        train: the 50,000-image training split if True, else the 10,000-image test split.
        download: fetch and extract the archive into root when files are missing.

    Returns:
        images: uint8 (N, 32, 32, 3), HWC, in file order.
        targets: int64 (N,).
        classes: C class names, index i naming label i.
    """
    if name not in LAYOUTS:
        raise UserError(f"unknown CIFAR dataset {name!r}; choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    folder = os.path.join(root, layout.folder)
    split_files = layout.train_files if train else layout.test_files
    needed = split_files + (layout.meta_file,)
    _ensure_files(root, folder, needed, layout, download)

    parts = [_read_batch(os.path.join(folder, f), layout.label_key) for f in split_files]
    images = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    classes = _read_class_names(os.path.join(folder, layout.meta_file), layout.names_key)
    _check_label_range(targets, classes, folder)
    return images, targets, classes


def _missing_files(folder: str, needed: Tuple[str, ...]) -> List[str]:
    """Names in `needed` that are not regular files inside folder."""
    return [f for f in needed if not os.path.isfile(os.path.join(folder, f))]


def _ensure_files(root: str, folder: str, needed: Tuple[str, ...], layout: CifarLayout,
                  download: bool) -> None:
    """Make sure every needed file exists, downloading once if allowed."""
    missing = _missing_files(folder, needed)
    if not missing:
        return
    if not download:
        every_file = ", ".join(layout.train_files + layout.test_files + (layout.meta_file,))
        what = (f"CIFAR folder {folder} does not exist" if not os.path.isdir(folder)
                else f"CIFAR files missing in {folder}: {', '.join(missing)}")
        raise UserError(f"{what} (data.root must hold torchvision's {layout.folder}/ with {every_file}); "
                        f"set data.download=true, or copy torchvision's CIFAR files there")
    _download(root, folder, layout)
    missing = _missing_files(folder, needed)
    if missing:
        raise UserError(f"downloaded {layout.url} but {folder} still lacks {', '.join(missing)}; "
                        f"delete the folder and retry, or copy torchvision's CIFAR files there")


def _download(root: str, folder: str, layout: CifarLayout) -> None:
    """Download and extract the official archive into root (creates folder)."""
    # Imported here so that reading files already on disk never needs torchvision's network helpers.
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(layout.url, download_root=root, md5=layout.md5)
    except (OSError, RuntimeError, ValueError) as error:
        # URLError/HTTPError are OSErrors; an md5 mismatch is a RuntimeError.
        raise UserError(f"could not download {layout.url} ({error}); without network access, copy "
                        f"torchvision's CIFAR files into {folder}") from error


def _read_pickle(path: str) -> Dict[Any, Any]:
    """Unpickle a Python-2 CIFAR file into a dict whose keys may be bytes or str."""
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="bytes")
    except Exception as error:  # a corrupt pickle can raise almost any exception type
        raise UserError(f"{path} is not a readable CIFAR pickle ({type(error).__name__}: {error}); "
                        f"replace it with torchvision's original file") from error
    if not isinstance(content, dict):
        raise UserError(f"{path} does not hold a dict as CIFAR files do; replace it with "
                        f"torchvision's original file")
    return content


def _get_key(content: Dict[Any, Any], key: str, path: str) -> Any:
    """Value stored under key, whether the pickle used bytes or str keys."""
    for candidate in (key.encode("ascii"), key):
        if candidate in content:
            return content[candidate]
    raise UserError(f"{path} has no {key!r} entry; replace it with torchvision's original file")


def _read_batch(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """One data file -> images uint8 (N, 32, 32, 3) and targets int64 (N,)."""
    content = _read_pickle(path)
    rows = np.asarray(_get_key(content, "data", path))
    labels = np.asarray(_get_key(content, label_key, path))
    if rows.ndim != 2 or rows.shape[1] != ROW_LENGTH:
        raise UserError(f"{path}: 'data' has shape {rows.shape}, expected (N, {ROW_LENGTH}); "
                        f"replace it with torchvision's original file")
    if not np.issubdtype(rows.dtype, np.integer) or (rows.size and (rows.min() < 0 or rows.max() > 255)):
        raise UserError(f"{path}: 'data' must hold integers 0..255, got dtype {rows.dtype}; "
                        f"replace it with torchvision's original file")
    if labels.shape != (rows.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: {label_key!r} must be {rows.shape[0]} integers, got shape "
                        f"{labels.shape}; replace it with torchvision's original file")
    return _rows_to_hwc(rows), labels.astype(np.int64)


def _rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-major rows -> contiguous uint8 (N, 32, 32, 3) for PIL."""
    planes = rows.astype(np.uint8).reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def _read_class_names(path: str, names_key: str) -> List[str]:
    """Class names from batches.meta / meta, decoded to str."""
    names = _get_key(_read_pickle(path), names_key, path)
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{path}: {names_key!r} must be a non-empty list of names; "
                        f"replace it with torchvision's original file")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _check_label_range(targets: np.ndarray, classes: List[str], folder: str) -> None:
    """Every label must index a class name, or training would index out of range later."""
    if targets.size and (targets.min() < 0 or targets.max() >= len(classes)):
        raise UserError(f"labels in {folder} range {targets.min()}..{targets.max()} but the meta file "
                        f"names {len(classes)} classes; replace the files with torchvision's originals")


@DATASETS.register("cifar10", in_memory=True, max_per_class=5000, num_classes=10,
                   help="CIFAR-10: 10 classes of 32 x 32 images, 5000 per class in train, 1000 in test")
@DATASETS.register("cifar100", in_memory=True, max_per_class=500, num_classes=100,
                   help="CIFAR-100: 100 classes of 32 x 32 images, 500 per class in train, 100 in test")
def load_cifar_splits(data_cfg, split, train_tf, test_tf,
                      with_train=True) -> tuple[Optional[LabelledDataset], LabelledDataset]:
    only_test_split(data_cfg, split)
    if data_cfg.image_size != 32:
        raise UserError(f"key 'data.image_size' is {data_cfg.image_size}; CIFAR images are 32 x 32")
    test_images, test_targets, classes = load_cifar(data_cfg.root, data_cfg.name, False, data_cfg.download)
    test = ArrayDataset(test_images, test_targets, test_tf, classes)
    if not with_train:
        return None, test
    images, targets, _ = load_cifar(data_cfg.root, data_cfg.name, True, data_cfg.download)
    return ArrayDataset(images, targets, train_tf, classes), test
