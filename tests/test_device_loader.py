"""The device-resident loader: its augmentation against torchvision's, and its draw distribution."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from data.datasets import ArrayDataset
from data.device_loader import DeviceLoader, augment_batch
from data.samplers import EpochShuffleSampler
from data.transforms import CIFAR_MEAN, CIFAR_STD


def coordinate_image():
    """32 x 32 image whose channel 0 holds row + 1 and channel 1 holds column + 1 (0 = padding)."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def loader_for(images, targets, train=True, batch_size=None, **options):
    dataset = ArrayDataset(images, targets, transform=None, classes=[str(c) for c in range(10)])
    sampler = EpochShuffleSampler(len(targets), seed=0) if train else None
    return DeviceLoader(dataset, batch_size or len(targets), "cpu", mean=CIFAR_MEAN, std=CIFAR_STD,
                        train=train, sampler=sampler, **options)


@pytest.mark.slow
def test_crop_offsets_uniform_over_0_to_8_and_flip_rate_one_half():
    count = 9 * 9 * 2 * 150
    loader = loader_for(np.repeat(coordinate_image()[None], count, axis=0), np.zeros(count, dtype=np.int64))
    torch.manual_seed(0)
    images = loader._augment(loader.pixels)                       # uint8 (count, 3, 32, 32)
    row_channel, col_channel = images[:, 0].long(), images[:, 1].long()
    flipped = col_channel[:, 16, 16] < col_channel[:, 16, 15]
    row_offset = row_channel[:, 16, 16] - 1 - 16 + 4
    col_offset = torch.where(flipped, col_channel[:, 16, 16] - 1 - 15 + 4, col_channel[:, 16, 16] - 1 - 16 + 4)
    for offsets in (row_offset, col_offset):
        frequencies = torch.bincount(offsets, minlength=9).float() / count
        assert offsets.min() == 0 and offsets.max() == 8
        assert torch.allclose(frequencies, torch.full((9,), 1 / 9), atol=0.012)
    assert abs(flipped.float().mean().item() - 0.5) < 0.02
    # Row and column offsets are drawn independently of each other and of the flip.
    joint = torch.bincount(row_offset * 9 + col_offset, minlength=81).float() / count
    assert torch.allclose(joint, torch.full((81,), 1 / 81), atol=0.005)


@pytest.mark.parametrize("top, left, flip", [(0, 0, False), (8, 8, True), (3, 6, False), (5, 1, True), (4, 4, True)])
def test_fixed_offset_and_flip_equal_torchvision(top, left, flip):
    rng = np.random.default_rng(top * 10 + left)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    reference = TF.crop(TF.pad(Image.fromarray(image), 4), top, left, 32, 32)
    if flip:
        reference = TF.hflip(reference)
    expected = TF.normalize(TF.to_tensor(reference), CIFAR_MEAN, CIFAR_STD)

    loader = loader_for(image[None], np.zeros(1, dtype=np.int64))
    cropped = augment_batch(loader.pixels, torch.tensor([[top, left]]), torch.tensor([flip]), 32)
    ours = loader.normalize(cropped)[0]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_training_batches_follow_the_sampler_and_drop_the_last_partial_batch():
    images = np.zeros((70, 32, 32, 3), dtype=np.uint8)
    targets = np.arange(70) % 10
    loader = loader_for(images, targets, batch_size=32)
    loader.sampler.set_epoch(3)
    expected_order = loader.sampler.epoch_order()
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert torch.equal(torch.cat([t for _, t in batches]), torch.as_tensor(targets)[expected_order[:64]])
    assert batches[0][0].shape == (32, 3, 32, 32) and batches[0][0].dtype == torch.float32
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    loader.sampler.set_start(32)
    assert len(loader) == 1


def test_evaluation_batches_are_normalized_in_order_and_keep_the_last_partial_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    loader = loader_for(images, np.arange(10), train=False, batch_size=4)
    batches = list(loader)
    assert [len(t) for _, t in batches] == [4, 4, 2]
    expected = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(im)), CIFAR_MEAN, CIFAR_STD) for im in images])
    assert torch.allclose(torch.cat([x for x, _ in batches]), expected, atol=1e-5)


@pytest.mark.slow
def test_a_short_training_run_through_the_device_loader_with_rsg_and_drs(make_tiny_config, restore_torch_globals):
    import json
    import os

    from engine.config import load_config
    from engine.run import fit

    path = make_tiny_config("device", data={"loader": "device", "sampler": "drs", "resample_start": 1},
                            train={"epochs": 2, "amp": "bf16", "channels_last": True})
    cfg = load_config(path)
    report = fit(cfg)
    records = [json.loads(line) for line in open(os.path.join(cfg.output_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["train"]["generated_per_step"] == 0 < records[1]["train"]["generated_per_step"]
    assert all(np.isfinite(r["train"]["loss_total"]) for r in records)
    assert sum(1 for value in report.per_class if value == value) == 10   # every test class evaluated
