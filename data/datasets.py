"""Map-style datasets over in-memory uint8 arrays (CIFAR, digits) or image files (image folders).

Both keep labels in a plain `targets` list so that samplers and class counts never need to
load an image, and both are plain picklable objects so DataLoader workers can receive them.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from engine.errors import UserError

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


class FileDataset(Dataset):
    """Images read lazily from files; item i -> (transform(RGB PIL image), target)."""

    def __init__(self, paths: List[str], targets: Sequence[int], transform: Transform,
                 classes: List[str]):
        self.paths = list(paths)
        self.targets = _as_target_list(targets, len(self.paths), "FileDataset")
        self.transform = transform
        self.classes = list(classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        image = load_rgb(self.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def subset(self, indices: Sequence[int]) -> "FileDataset":
        """New dataset with only the given samples, in the given order."""
        chosen = [int(i) for i in np.asarray(indices, dtype=np.int64)]
        return FileDataset([self.paths[i] for i in chosen], [self.targets[i] for i in chosen],
                           self.transform, self.classes)


def load_rgb(path: str) -> Image.Image:
    """Open an image file fully as RGB; a missing or broken file becomes a UserError naming it."""
    try:
        with Image.open(path) as image:
            # convert() forces the full decode here, so truncated files fail now, not in a transform.
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise UserError(f"image file {path} is missing; restore it or remove it from the dataset") from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise UserError(f"image file {path} cannot be read ({error}); replace or delete it") from error
