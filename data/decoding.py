"""Reading one image file as RGB, with the decoder named by `data.decoder`.

    pil          PIL: Image.open + full decode, an RGB PIL image (what torchvision's datasets do)
    torchvision  the file's bytes into torchvision.io.decode_image (libjpeg-turbo for JPEG):
                 a uint8 tensor (3, H, W), ready for the tensor transforms of data/transforms.py.
                 Formats it cannot read (BMP, PPM, 16-bit PNG, ...) go through PIL instead.

Both raise FileNotFoundError for a missing file and UnreadableImage for anything that does not
decode (truncated, corrupt, not an image), so that the dataset can name the file and its list line.
scripts/benchmark_loading.py times both; docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

DECODERS = ("pil", "torchvision")

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec, with a warning on every
# call; they still work, and this project's code runs on torchvision 0.26 to 0.29.
DEPRECATION = "The image decoding and encoding capabilities of TorchVision"

# What PIL raises on files that are not (complete) images.
PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


class UnreadableImage(Exception):
    """The file exists but does not decode as an image; the message says why."""


def read_image(path: str, decoder: str):
    """The image at `path` as RGB: a PIL image (decoder 'pil') or uint8 tensor (3, H, W) ('torchvision')."""
    if decoder == "pil":
        return read_pil(path)
    if decoder == "torchvision":
        return read_tensor(path)
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")


def read_pil(path: str) -> Image.Image:
    """Decode fully now (a truncated file fails here, not later in a transform); RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise
    except PIL_ERRORS as error:
        raise UnreadableImage(str(error) or type(error).__name__) from None


def read_tensor(path: str) -> torch.Tensor:
    """uint8 (3, H, W), decoded by torchvision.io; PIL for the formats torchvision does not read."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))   # one copy, writable, no warning
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableImage(str(error)) from None
    if data.numel() == 0:
        raise UnreadableImage("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATION, category=DeprecationWarning)
            image = decode_image(data, mode=ImageReadMode.RGB)
        if image.dtype == torch.uint8:
            return image
    except RuntimeError:
        pass   # not a format torchvision decodes, or corrupt: PIL decides which, and says why
    pixels = np.asarray(read_pil(path))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
