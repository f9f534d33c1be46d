"""Decoded-and-augmented images per second per CPU core, for each way of reading a JPEG.

    python scripts/benchmark_loading.py                          # generated 500x375 JPEGs, quality 90
    python scripts/benchmark_loading.py --folder /data/imagenet/train --count 200
    python scripts/benchmark_loading.py --width 800 --height 600  # iNaturalist-sized images

One thread, one process, timed in CPU seconds (time.process_time): the figure is what one
DataLoader worker (one busy core) delivers, little changed by other load on the machine. Each row
is the whole path of one sample, from the file on disk to the normalized float tensor (3, 224, 224):

    pil                  PIL decode, torchvision.transforms on the PIL image   (data.decoder: pil)
    torchvision          np.fromfile + torchvision.io.decode_image, transforms.v2 on uint8
                                                                               (data.decoder: torchvision)
    torchvision+read_file    the same, bytes read by torchvision.io.read_file
    torchvision+open         the same, bytes read by open().read() into a bytearray
    pil->tensor          PIL decode, then the uint8 tensor transforms
    pil+draft            PIL with draft(): JPEG decoded at 1/2, 1/4 or 1/8 scale, the smallest that
                         keeps the shorter side >= the output side (not a data.decoder choice, see docs)
    cuda                 torchvision.io.decode_jpeg(device='cuda') on batches; only with a GPU

It also prints how far the pil and torchvision pipelines are apart in pixels (0..255 levels) for
the same crop. Markdown tables on stdout, for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as F1
from torchvision.transforms.v2 import functional as F2

from data.decoding import DEPRECATION, read_pil, read_tensor
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, preset_eval_transform, preset_train_transform
from engine.exits import CommandLine, reports_user_errors

# ---------------------------------------------------------------------------------------------
# Images


def photo_like(rng, width: int, height: int) -> Image.Image:
    """Smooth colour fields, a few hard-edged shapes and sensor-like noise: JPEG sizes of photos."""
    coarse = rng.integers(0, 256, size=(height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
    for _ in range(6):
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        image[top:top + rng.integers(8, height // 2), left:left + rng.integers(8, width // 2)] = rng.integers(0, 256, 3)
    image += rng.normal(0, 9, size=image.shape).astype(np.int16)
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def generate_jpegs(folder: str, count: int, width: int, height: int, quality: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"{index:05d}.jpg")
        photo_like(rng, width, height).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def folder_jpegs(folder: str, count: int) -> list[str]:
    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".jpg", ".jpeg")))[:count]
    if not paths:
        raise SystemExit(f"error: no .jpg / .jpeg files under {folder}")
    return paths


# ---------------------------------------------------------------------------------------------
# Readers


def read_torchvision_read_file(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(path), mode=ImageReadMode.RGB)


def read_torchvision_open(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    with open(path, "rb") as f:
        data = bytearray(f.read())
    return decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)


def read_pil_draft(path: str, min_side: int) -> Image.Image:
    """Decode at the smallest JPEG scale (1, 1/2, 1/4, 1/8) whose shorter side stays >= min_side."""
    with Image.open(path) as image:
        width, height = image.size
        scale = min_side / min(width, height)
        image.draft("RGB", (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))))
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


def pipelines(preset: str, size: int, resize: int) -> dict:
    """name -> (reader, train transform, eval transform)."""
    def transforms_for(tensor_input):
        return (preset_train_transform(preset, size, 4, True, IMAGENET_MEAN, IMAGENET_STD, tensor_input),
                preset_eval_transform(size, resize, IMAGENET_MEAN, IMAGENET_STD, tensor_input))

    on_pil, on_tensor = transforms_for(False), transforms_for(True)

    def pil_to_tensor(path):
        return torch.from_numpy(np.asarray(read_pil(path)).copy()).permute(2, 0, 1)

    return {
        "pil": ((read_pil, read_pil), *on_pil),
        "torchvision": ((read_tensor, read_tensor), *on_tensor),
        "torchvision+read_file": ((read_torchvision_read_file,) * 2, *on_tensor),
        "torchvision+open": ((read_torchvision_open,) * 2, *on_tensor),
        "pil->tensor": ((pil_to_tensor,) * 2, *on_tensor),
        "pil+draft": ((lambda p: read_pil_draft(p, size), lambda p: read_pil_draft(p, resize)), *on_pil),
    }


# ---------------------------------------------------------------------------------------------
# Timing


def images_per_second(paths: list[str], read, transform, images: int) -> float:
    for path in paths[:4]:   # warm caches and lazy imports
        transform(read(path))
    started = time.process_time()   # CPU time of this process: other load on the machine does not count
    for index in range(images):
        transform(read(paths[index % len(paths)]))
    return images / (time.process_time() - started)


def cuda_images_per_second(paths: list[str], images: int, batch: int = 64) -> float:
    from torchvision.io import decode_jpeg

    files = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in paths]
    batches = [[files[(start + i) % len(files)] for i in range(batch)] for start in range(0, images, batch)]
    decode_jpeg(batches[0], device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    for chunk in batches:
        decode_jpeg(chunk, device="cuda")
    torch.cuda.synchronize()
    return len(batches) * batch / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Pixel differences between the pil and torchvision pipelines


def level_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean, max) absolute difference in 0..255 levels of two uint8-range tensors."""
    diff = (a.float() - b.float()).abs()
    return float(diff.mean()), float(diff.max())


def pixel_differences(paths: list[str], size: int, resize: int) -> dict:
    """Mean and max level differences over the images, for decode, eval resize and one random crop."""
    rows = {"decode": [], f"eval resize {resize} + crop {size}": [], f"random resized crop to {size}": []}
    generator = torch.Generator().manual_seed(0)
    for path in paths[:32]:
        pil_image, tensor = read_pil(path), read_tensor(path)
        rows["decode"].append(level_difference(F1.pil_to_tensor(pil_image), tensor))
        pil_eval = F1.center_crop(F1.resize(pil_image, resize), size)
        tensor_eval = F2.center_crop(F2.resize(tensor, [resize], antialias=True), [size])
        rows[f"eval resize {resize} + crop {size}"].append(level_difference(F1.pil_to_tensor(pil_eval), tensor_eval))
        width, height = pil_image.size
        scale = float(torch.empty(1).uniform_(0.08, 1.0, generator=generator))
        side_h, side_w = max(1, int(height * scale ** 0.5)), max(1, int(width * scale ** 0.5))
        top, left = (height - side_h) // 2, (width - side_w) // 2
        pil_crop = F1.resized_crop(pil_image, top, left, side_h, side_w, [size, size])
        tensor_crop = F2.resized_crop(tensor, top, left, side_h, side_w, [size, size], antialias=True)
        rows[f"random resized crop to {size}"].append(level_difference(F1.pil_to_tensor(pil_crop), tensor_crop))
    return {name: (np.mean([m for m, _ in values]), max(x for _, x in values)) for name, values in rows.items()}


# ---------------------------------------------------------------------------------------------


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("--folder", default=None, help="read JPEGs from here instead of generating them")
    parser.add_argument("--count", type=int, default=64, help="distinct images (generated or read)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--images", type=int, default=200, help="images timed per row, split and round")
    parser.add_argument("--rounds", type=int, default=3, help="the best of this many rounds is reported")
    parser.add_argument("--preset", default="resized_crop_jitter",
                        choices=["pad_crop_flip", "resized_crop", "resized_crop_jitter"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--eval-resize", type=int, default=256)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)   # one core: what a DataLoader worker gets
    warnings.filterwarnings("ignore", message=DEPRECATION, category=DeprecationWarning)   # torchvision 0.29
    with tempfile.TemporaryDirectory() as scratch:
        if args.folder:
            paths, source = folder_jpegs(args.folder, args.count), f"{args.folder} (first {args.count} JPEGs)"
        else:
            paths = generate_jpegs(scratch, args.count, args.width, args.height, args.quality)
            source = f"{args.count} generated {args.width}x{args.height} JPEGs, quality {args.quality}"
        mean_kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"torchvision {__import__('torchvision').__version__}, pillow {Image.__version__}; 1 thread")
        print(f"images: {source}, {mean_kb:.0f} KB on average; preset {args.preset}, "
              f"train {args.image_size} px, eval resize {args.eval_resize} + crop {args.image_size}\n")
        print(f"| reader | train images/s/core | eval images/s/core |  (best of {args.rounds} rounds)")
        print("|---|---|---|")
        named = pipelines(args.preset, args.image_size, args.eval_resize)
        best = {name: [0.0, 0.0] for name in named}
        for _ in range(args.rounds):   # interleaved rounds: other load on the machine hits every row alike
            for name, (readers, train, evaluation) in named.items():
                for column, transform in enumerate((train, evaluation)):
                    rate = images_per_second(paths, readers[column], transform, args.images)
                    best[name][column] = max(best[name][column], rate)
        for name, (train_rate, eval_rate) in best.items():
            print(f"| {name} | {train_rate:.0f} | {eval_rate:.0f} |")
        if torch.cuda.is_available():
            print(f"| cuda (decode only, batches of 64, {torch.cuda.get_device_name()}) | "
                  f"{cuda_images_per_second(paths, args.images):.0f} | |")
        else:
            print("| cuda | skipped: no CUDA device | |")
        print("\n| pil vs torchvision, same geometry | mean abs diff (levels) | max abs diff (levels) |")
        print("|---|---|---|")
        for name, (mean, largest) in pixel_differences(paths, args.image_size, args.eval_resize).items():
            print(f"| {name} | {mean:.3f} | {largest:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
