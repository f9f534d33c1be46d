"""Map-style datasets over in-memory uint8 arrays (CIFAR, digits) or image files (image folders,
split lists).

Both keep labels in a plain `targets` list so that samplers and class counts never need to
load an image, and both are plain picklable objects so DataLoader workers can receive them.
A problem with a file is raised as a UserError naming the file (and its list line), inside the
worker; core.errors turns the DataLoader's re-raised copy back into that one line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from core import LOGGER_NAME
from core.errors import UserError
from data.decoding import UnreadableImage, read_image, read_pil

Transform = Optional[Callable[[Image.Image], object]]


def _as_target_list(targets: Sequence[int], expected_length: int, what: str) -> List[int]:
    """Targets as a python list of int, checked to match the number of samples."""
    target_list = [int(t) for t in np.asarray(targets).reshape(-1)]
    if len(target_list) != expected_length:
        raise ValueError(f"{what}: {expected_length} samples but {len(target_list)} targets")
    return target_list


class ArrayDataset(Dataset):
    """Images held in one uint8 array (N, H, W, 3); item i -> (transform(PIL image), target)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], transform: Transform,
                 classes: List[str]):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"ArrayDataset needs uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        self.images = images
        self.targets = _as_target_list(targets, len(images), "ArrayDataset")
        self.transform = transform
        self.classes = list(classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def subset(self, indices: Sequence[int]) -> "ArrayDataset":
        """New dataset with only the given samples, in the given order (copies the pixels)."""
        chosen = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.images[chosen], [self.targets[i] for i in chosen],
                            self.transform, self.classes)


class PathTable:
    """N file paths in one byte buffer plus offsets.

    A list of N Python strings would be copied page by page into every forked DataLoader worker
    as the workers touch the strings' reference counts (hundreds of MB for iNaturalist's 437k
    paths and 8 workers); two numpy arrays are never written to, so they stay shared.
    """

    def __init__(self, paths: Iterable[str]):
        encoded = [path.encode("utf-8") for path in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        index = range(len(self))[index]   # negative indices, and IndexError past the end
        return self.buffer[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def take(self, indices: Sequence[int]) -> "PathTable":
        return PathTable(self[int(i)] for i in indices)


@dataclass
class ListOrigin:
    """Where each sample of a dataset was listed: a list file's 1-based line numbers, or the
    indices into the `images` array of an iNaturalist JSON file."""

    source: str
    numbers: np.ndarray          # int64 (N,)
    json: bool = False

    def describe(self, index: int) -> str:
        number = int(self.numbers[index])
        return f"{self.source}: images[{number}]" if self.json else f"{self.source}:{number}"

    def take(self, indices: Sequence[int]) -> "ListOrigin":
        return ListOrigin(self.source, self.numbers[np.asarray(indices, dtype=np.int64)], self.json)


class FileDataset(Dataset):
    """Images read lazily from files; item i -> (transform(image), target).

    decoder 'pil' hands the transform an RGB PIL image, 'torchvision' a uint8 tensor (3, H, W)
    (data/decoding.py). `origin` (split lists) lets errors name the list file and line.
    With skip_corrupt, a file that does not decode is replaced by the next readable image of its
    class (class counts, and so the sampler's and the loss's view of the data, stay true) and
    marked in `unreadable`, a shared-memory byte per sample that DataLoader workers write and the
    main process reads: see take_unreadable(). A missing file is always an error.
    """

    def __init__(self, paths: Iterable[str], targets: Sequence[int], transform: Transform,
                 classes: List[str], *, decoder: str = "pil", skip_corrupt: bool = False,
                 origin: Optional[ListOrigin] = None):
        self.paths = paths if isinstance(paths, PathTable) else PathTable(paths)
        self.targets = _as_target_list(targets, len(self.paths), "FileDataset")
        self.transform = transform
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.decoder = decoder
        self.skip_corrupt = skip_corrupt
        self.origin = origin
        # Created before any worker starts, so that forked and spawned workers write the same pages.
        self.unreadable = torch.zeros(len(self.targets), dtype=torch.uint8).share_memory_() if skip_corrupt else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        try:
            image = self._read(index)
        except UnreadableImage as error:
            if not self.skip_corrupt:
                raise UserError(f"{self.where(index)}image file {self.paths[index]} cannot be read ({error}); "
                                f"replace it, remove it from the dataset, or set data.skip_corrupt=true to "
                                f"skip such files") from None
            self.unreadable[index] = 1
            image = self._substitute(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def where(self, index: int) -> str:
        """'list.txt:17: ' for a listed sample, '' for an image folder's."""
        return f"{self.origin.describe(index)}: " if self.origin is not None else ""

    def _read(self, index: int):
        path = self.paths[index]
        try:
            return read_image(path, self.decoder)
        except FileNotFoundError:
            raise UserError(f"{self.where(index)}image file {path} is missing; restore it or remove it "
                            f"from the dataset") from None

    def _substitute(self, index: int):
        """The next readable image of the same class after `index` (cyclically)."""
        target = self.targets[index]
        same_class = np.flatnonzero(np.asarray(self.targets) == target)
        after = np.roll(same_class, -int(np.searchsorted(same_class, index)) - 1)
        for candidate in after[:-1]:
            if self.unreadable[candidate]:
                continue
            try:
                return self._read(int(candidate))
            except UnreadableImage:
                self.unreadable[candidate] = 1
        raise UserError(f"{self.where(index)}image file {self.paths[index]} cannot be read, nor can any other "
                        f"image of class {target} ({len(same_class)} images); data.skip_corrupt cannot replace it")

    def take_unreadable(self) -> List[str]:
        """'where path' of each sample marked unreadable since the last call; clears the marks."""
        if self.unreadable is None:
            return []
        marked = torch.nonzero(self.unreadable).flatten().tolist()
        self.unreadable.zero_()
        return [f"{self.where(i)}{self.paths[i]}" for i in marked]

    def subset(self, indices: Sequence[int]) -> "FileDataset":
        """New dataset with only the given samples, in the given order."""
        chosen = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        origin = self.origin.take(chosen) if self.origin is not None else None
        return FileDataset(self.paths.take(chosen), [self.targets[i] for i in chosen], self.transform,
                           self.classes, decoder=self.decoder, skip_corrupt=self.skip_corrupt, origin=origin)


def take_unreadable(dataset: Dataset) -> List[str]:
    """The images data.skip_corrupt replaced in `dataset` since the last call (then forgotten)."""
    return dataset.take_unreadable() if isinstance(dataset, FileDataset) else []


def log_unreadable(skipped: Sequence[str], when: str, log: Optional[logging.Logger] = None) -> None:
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        (log or logging.getLogger(LOGGER_NAME)).warning(
            "%s: %d unreadable image(s) replaced by another image of the same class (data.skip_corrupt): %s",
            when, len(skipped), shown)


def report_unreadable(datasets: Sequence[Dataset], when: str, log: Optional[logging.Logger] = None) -> int:
    """Log the images that data.skip_corrupt replaced since the last report (then forget them).

    Called after each evaluation of eval.py; returns how many there were. (Training gathers the
    lists of every rank first: engine/run.py.)
    """
    total = 0
    for dataset in datasets:
        skipped = take_unreadable(dataset)
        total += len(skipped)
        log_unreadable(skipped, when, log)
    return total


def check_files_exist(dataset: Dataset, split: str, skip_corrupt: bool,
                      log: Optional[logging.Logger] = None) -> None:
    """Every image file of a file dataset exists (a stat each, no decoding), so that a missing
    file stops the run before it trains rather than after an epoch. With data.skip_corrupt the
    missing files are reported and will be replaced like unreadable ones."""
    if not isinstance(dataset, FileDataset):
        return
    missing = [i for i, path in enumerate(dataset.paths) if not os.path.isfile(path)]
    if not missing:
        return
    shown = "; ".join(f"{dataset.where(i)}{dataset.paths[i]}" for i in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    if skip_corrupt:
        (log or logging.getLogger(LOGGER_NAME)).warning(
            "the %s split: %d of %d image files are missing (%s%s); data.skip_corrupt will replace them",
            split, len(missing), len(dataset), shown, more)
        return
    raise UserError(f"the {split} split: {len(missing)} of {len(dataset)} image files are missing: {shown}{more}; "
                    f"restore them, fix data.root, or set data.skip_corrupt=true to replace them by other "
                    f"images of their class")


def image_side_problems(dataset: Dataset, fits, limit: int = 3) -> tuple[list[str], int]:
    """('path: W x H' of up to `limit` image files whose size, read from the file's header without
    decoding, `fits(width, height)` refuses; how many there are). Files that do not open are left to
    the decoding's own checks."""
    if not isinstance(dataset, FileDataset):
        return [], 0
    shown, count = [], 0
    for path in dataset.paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError):
            continue
        if not fits(width, height):
            count += 1
            if len(shown) < limit:
                shown.append(f"{path}: {width} x {height}")
    return shown, count


def load_rgb(path: str) -> Image.Image:
    """Open an image file fully as RGB; a missing or broken file becomes a UserError naming it."""
    try:
        return read_pil(path)
    except FileNotFoundError as error:
        raise UserError(f"image file {path} is missing; restore it or remove it from the dataset") from error
    except UnreadableImage as error:
        raise UserError(f"image file {path} cannot be read ({error}); replace or delete it") from error
