"""Tests for the data package, using only generated files under tmp_path and scikit-learn's digits."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as tv_transforms

from core.errors import UserError
from core.seeds import SAMPLER_STREAM, epoch_seed
from data.cifar import load_cifar
from data.datasets import ArrayDataset, FileDataset
from data.digits import load_digits_split
from data.image_folder import check_same_classes, scan_image_folder
from data.imbalance import class_counts, imbalanced_counts, select_per_class
from data.samplers import EpochShuffleSampler
from data.transforms import CIFAR_MEAN, CIFAR_STD, preset_eval_transform, preset_train_transform

# ---------------------------------------------------------------- imbalance profiles

CIFAR10_RHO100_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR10_RHO50_LT = [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]


@pytest.mark.parametrize("n_max, num_classes, rho, profile, total", [
    (5000, 10, 100, "longtail", 12406),
    (5000, 10, 100, "step", 25250),
    (5000, 10, 50, "longtail", 13996),
    (5000, 10, 50, "step", 25500),
    (500, 100, 100, "longtail", 10847),
    (500, 100, 100, "step", 25250),
    (500, 100, 50, "longtail", 12608),
    (500, 100, 50, "step", 25500),
])
def test_profile_totals(n_max, num_classes, rho, profile, total):
    counts = imbalanced_counts(n_max, num_classes, rho, profile)
    assert len(counts) == num_classes
    assert sum(counts) == total
    assert counts[0] == n_max
    assert counts == sorted(counts, reverse=True)


def test_profile_exact_lists():
    assert imbalanced_counts(5000, 10, 100, "longtail") == CIFAR10_RHO100_LT
    assert imbalanced_counts(5000, 10, 50, "longtail") == CIFAR10_RHO50_LT
    cifar100 = imbalanced_counts(500, 100, 100, "longtail")
    assert cifar100[:3] == [500, 477, 455] and cifar100[-3:] == [5, 5, 5]
    assert imbalanced_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert imbalanced_counts(500, 100, 50, "step") == [500] * 50 + [10] * 50
    assert imbalanced_counts(7, 3, 100, "balanced") == [7, 7, 7]


def test_profile_errors():
    with pytest.raises(UserError, match="longtail, step, balanced"):
        imbalanced_counts(10, 3, 10, "zipf")
    with pytest.raises(UserError, match=">= 1"):
        imbalanced_counts(10, 3, 0.5, "longtail")


def test_select_per_class_first_in_order():
    targets = [1, 0, 1, 2, 0, 1, 0, 2, 2, 0]
    picked = select_per_class(targets, [2, 1, 3])
    assert picked.dtype == np.int64
    assert picked.tolist() == [0, 1, 3, 4, 7, 8]  # class 0: 1, 4; class 1: 0; class 2: 3, 7, 8
    assert class_counts([targets[i] for i in picked], 3) == [2, 1, 3]


def test_select_per_class_seeded_shuffle():
    targets = np.repeat(np.arange(3), 50)
    first = select_per_class(targets, [10, 5, 1], shuffle_seed=3)
    again = select_per_class(targets, [10, 5, 1], shuffle_seed=3)
    assert first.tolist() == again.tolist()
    assert first.tolist() == sorted(first.tolist())
    assert class_counts(targets[first], 3) == [10, 5, 1]
    assert first.tolist() != select_per_class(targets, [10, 5, 1]).tolist()


def test_select_per_class_too_few():
    with pytest.raises(UserError, match="class 1 has 2 samples but 3 were asked"):
        select_per_class([0, 1, 1, 0], [1, 3])


# ---------------------------------------------------------------- CIFAR files

def _write_pickle(path, content):
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _random_batch(rng, labels):
    """Rows (N, 3072) uint8 with a known pixel: image k has R,G,B at (row 1, col 2) = k%256, 7, 9."""
    rows = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    pixel = 1 * 32 + 2
    rows[:, pixel] = np.arange(len(labels)) % 256
    rows[:, 1024 + pixel] = 7
    rows[:, 2048 + pixel] = 9
    return rows


def _make_cifar10(root, rng):
    """Five train batches of 60 images each (labels known) + a 40-image test batch + meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_labels = rng.integers(0, 10, size=300)
    for b in range(5):
        labels = train_labels[b * 60:(b + 1) * 60]
        _write_pickle(folder / f"data_batch_{b + 1}",
                      {b"data": _random_batch(rng, labels), b"labels": labels.tolist()})
    test_labels = np.repeat(np.arange(10), 4)
    _write_pickle(folder / "test_batch", {b"data": _random_batch(rng, test_labels),
                                          b"labels": test_labels.tolist()})
    names = [f"class{i}".encode() for i in range(10)]
    _write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, train_labels


def _make_cifar100(root, rng):
    """CIFAR-100 layout (train/test/meta) with str keys to check both key types are accepted."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_labels = rng.integers(0, 100, size=250)
    _write_pickle(folder / "train", {"data": _random_batch(rng, train_labels),
                                     "fine_labels": train_labels.tolist(),
                                     "coarse_labels": (train_labels // 5).tolist()})
    test_labels = np.arange(100)
    _write_pickle(folder / "test", {"data": _random_batch(rng, test_labels),
                                    "fine_labels": test_labels.tolist()})
    _write_pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                    "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder, train_labels


def test_load_cifar10_layout_and_selection(tmp_path):
    rng = np.random.default_rng(0)
    folder, train_labels = _make_cifar10(tmp_path, rng)
    images, targets, classes = load_cifar(str(tmp_path), "cifar10", train=True)
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert targets.dtype == np.int64 and targets.tolist() == train_labels.tolist()
    assert classes == [f"class{i}" for i in range(10)]
    # Image 61 is the second image of data_batch_2: its known pixel is (R, G, B) = (1, 7, 9).
    assert images[61, 1, 2].tolist() == [1, 7, 9]
    # A full row check: channel-major row -> HWC.
    with open(folder / "data_batch_1", "rb") as handle:
        rows = pickle.load(handle, encoding="bytes")[b"data"]
    assert np.array_equal(images[5], rows[5].reshape(3, 32, 32).transpose(1, 2, 0))

    counts = [min(c, 3 + i) for i, c in enumerate(class_counts(targets, 10))]
    picked = select_per_class(targets, counts)
    for c in range(10):
        expected_first = np.flatnonzero(train_labels == c)[:counts[c]]
        assert picked[targets[picked] == c].tolist() == expected_first.tolist()

    test_images, test_targets, _ = load_cifar(str(tmp_path), "cifar10", train=False)
    assert test_images.shape == (40, 32, 32, 3)
    assert class_counts(test_targets, 10) == [4] * 10


def test_load_cifar100(tmp_path):
    rng = np.random.default_rng(1)
    _, train_labels = _make_cifar100(tmp_path, rng)
    images, targets, classes = load_cifar(str(tmp_path), "cifar100", train=True)
    assert images.shape == (250, 32, 32, 3)
    assert targets.tolist() == train_labels.tolist()
    assert len(classes) == 100 and classes[42] == "fine42"
    assert images[3, 1, 2].tolist() == [3, 7, 9]
    test_images, test_targets, _ = load_cifar(str(tmp_path), "cifar100", train=False)
    assert test_images.shape == (100, 32, 32, 3) and test_targets.tolist() == list(range(100))


def test_load_cifar_missing_folder(tmp_path):
    with pytest.raises(UserError) as caught:
        load_cifar(str(tmp_path), "cifar10", train=True)
    message = str(caught.value)
    assert f"CIFAR folder {os.path.join(str(tmp_path), 'cifar-10-batches-py')} does not exist" in message
    assert "data.download" in message and "data_batch_1" in message and "test_batch" in message
    os.makedirs(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"")
    with pytest.raises(UserError, match=r"CIFAR files missing in .*cifar-10-batches-py: batches.meta \(data.root"):
        load_cifar(str(tmp_path), "cifar10", train=False)


def test_load_cifar_unknown_name(tmp_path):
    with pytest.raises(UserError, match="cifar10, cifar100"):
        load_cifar(str(tmp_path), "cifar1000", train=True)


def test_load_cifar_corrupt_pickle(tmp_path):
    folder, _ = _make_cifar10(tmp_path, np.random.default_rng(2))
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match="data_batch_3"):
        load_cifar(str(tmp_path), "cifar10", train=True)


def test_load_cifar_wrong_keys_and_shapes(tmp_path):
    folder, _ = _make_cifar10(tmp_path, np.random.default_rng(3))
    _write_pickle(folder / "test_batch", {b"pixels": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4})
    with pytest.raises(UserError, match="test_batch.*'data'"):
        load_cifar(str(tmp_path), "cifar10", train=False)
    _write_pickle(folder / "test_batch", {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4})
    with pytest.raises(UserError, match="test_batch.*shape"):
        load_cifar(str(tmp_path), "cifar10", train=False)


# ---------------------------------------------------------------- image folders

def _make_image_tree(split_root, layout):
    """layout: {class name: [file names]}; writes small real PNG/JPEG images."""
    for class_name, file_names in layout.items():
        class_dir = split_root / class_name
        class_dir.mkdir(parents=True)
        for k, file_name in enumerate(file_names):
            image = Image.new("RGB", (6, 5), color=(10 * k, 20, 30))
            fmt = "JPEG" if file_name.lower().endswith((".jpg", ".jpeg")) else "PNG"
            image.save(class_dir / file_name, format=fmt)


def test_scan_image_folder(tmp_path):
    split_root = tmp_path / "train"
    _make_image_tree(split_root, {"zebra": ["b.png", "a.JPG"], "ant": ["x.jpeg", "c.png", "d.png"]})
    (split_root / "ant" / "notes.txt").write_text("not an image")
    (split_root / "ant" / ".hidden.png").write_bytes(b"")
    (split_root / ".cache").mkdir()
    paths, targets, classes = scan_image_folder(str(split_root))
    assert classes == ["ant", "zebra"]
    assert targets == [0, 0, 0, 1, 1]
    assert [os.path.basename(p) for p in paths] == ["c.png", "d.png", "x.jpeg", "a.JPG", "b.png"]

    dataset = FileDataset(paths, targets, preset_eval_transform(32, 0, CIFAR_MEAN, CIFAR_STD), classes)
    image, target = dataset[3]
    assert image.shape == (3, 5, 6) and target == 1
    small = dataset.subset([4, 0])
    assert small.targets == [1, 0] and small.num_classes == 2
    assert pickle.loads(pickle.dumps(small)).paths == small.paths


def test_scan_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="root/train/<class>"):
        scan_image_folder(str(tmp_path / "nothing"))
    split_root = tmp_path / "train"
    _make_image_tree(split_root, {"cat": ["1.png"]})
    (split_root / "dog").mkdir()
    with pytest.raises(UserError, match=r"dog.*no images"):
        scan_image_folder(str(split_root))


def test_check_same_classes():
    check_same_classes(["a", "b"], ["a", "b"], "/r")
    with pytest.raises(UserError, match=r"only in train \['c'\].*only in test \['d'\]"):
        check_same_classes(["a", "c"], ["a", "d"], "/r")


def test_file_dataset_bad_files(tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a full jpeg")
    dataset = FileDataset([str(corrupt), str(tmp_path / "gone.png")], [0, 1], None, ["a", "b"])
    assert dataset.targets == [0, 1]  # labels never need the images
    with pytest.raises(UserError, match="broken.jpg"):
        dataset[0]
    with pytest.raises(UserError, match="gone.png"):
        dataset[1]


# ---------------------------------------------------------------- digits, arrays, transforms

@pytest.mark.slow
def test_digits_split():
    test_images, test_targets, classes = load_digits_split(train=False)
    assert classes == [str(c) for c in range(10)]
    assert test_images.shape == (300, 16, 16, 3) and test_images.dtype == np.uint8
    assert test_targets.dtype == np.int64
    assert class_counts(test_targets, 10) == [30] * 10
    train_images, train_targets, _ = load_digits_split(train=True, image_size=8)
    assert train_images.shape == (1797 - 300, 8, 8, 3)
    pool = class_counts(train_targets, 10)
    assert pool == [148, 152, 147, 153, 151, 152, 151, 149, 144, 150]
    assert min(pool) >= 144
    # At the native size the pixels are the original values scaled to 0..255, gray in 3 channels.
    from sklearn.datasets import load_digits
    first = np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)
    assert np.array_equal(train_images[0, :, :, 0], first)
    assert np.array_equal(train_images[..., 0], train_images[..., 2])


def test_array_dataset_and_transforms():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    plain = preset_eval_transform(32, 0, CIFAR_MEAN, CIFAR_STD)
    dataset = ArrayDataset(images, np.array([0, 1, 2, 0, 1, 2]), plain, ["a", "b", "c"])
    assert dataset.targets == [0, 1, 2, 0, 1, 2] and dataset.num_classes == 3
    tensor, target = dataset[2]
    expected = tv_transforms.Normalize(CIFAR_MEAN, CIFAR_STD)(
        torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255)
    assert target == 2 and torch.allclose(tensor, expected, atol=1e-6)
    subset = pickle.loads(pickle.dumps(dataset.subset([5, 1])))
    assert subset.targets == [2, 1] and np.array_equal(subset.images[0], images[5])

    torch.manual_seed(0)
    augment = preset_train_transform("pad_crop_flip", 32, 4, True, CIFAR_MEAN, CIFAR_STD)
    out = augment(Image.fromarray(images[0]))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    resized = preset_eval_transform(20, 20, CIFAR_MEAN, CIFAR_STD)(Image.fromarray(images[0]))
    assert resized.shape == (3, 20, 20)


def test_train_transform_pads_with_zeros():
    white = Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8))
    crop = preset_train_transform("pad_crop_flip", 8, 4, False, (0, 0, 0), (1, 1, 1))
    torch.manual_seed(0)
    outs = [crop(white) for _ in range(20)]
    # Some crops must reach into the zero padding, and only 0 or 1 values can appear.
    assert any((o == 0).any() for o in outs)
    assert all(((o == 0) | (o == 1)).all() for o in outs)


# ---------------------------------------------------------------- sampler

def test_epoch_shuffle_sampler():
    sampler = EpochShuffleSampler(50, seed=7)
    sampler.set_epoch(3)
    order = list(sampler)
    assert sorted(order) == list(range(50)) and len(sampler) == 50
    other = EpochShuffleSampler(50, seed=7)
    other.set_epoch(3)
    assert list(other) == order
    other.set_epoch(4)
    assert list(other) != order

    sampler.set_start(17)
    assert len(sampler) == 33 and list(sampler) == order[17:]
    sampler.set_epoch(3)
    assert list(sampler) == order

    expected = torch.randperm(50, generator=torch.Generator().manual_seed(epoch_seed(7, 3, SAMPLER_STREAM))).tolist()
    assert order == expected
    ordered = EpochShuffleSampler(5, seed=7, shuffle=False)
    ordered.set_start(2)
    assert list(ordered) == [2, 3, 4] and len(ordered) == 3


def test_load_cifar_download_failure(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(UserError, match=r"could not download .*cifar-100-python"):
        load_cifar(str(tmp_path), "cifar100", train=False, download=True)


# ---------------------------------------------------------------- every class keeps a training image

@pytest.mark.parametrize("name", ["cifar10", pytest.param("digits", marks=pytest.mark.slow), "image_folder"])
def test_an_imbalance_that_leaves_a_class_without_images_is_refused_naming_it(name, tiny_cifar_root, tmp_path):
    """n_max 40 (3 for the image folder) at rho 1000 leaves int(n_max / rho^(i / (C - 1))) images
    to class i: 0 from class 5 of 10 on (class 1 of 2)."""
    from data.builder import build_datasets
    from engine.config import DataConfig

    data_cfg = DataConfig(name=name, root=tiny_cifar_root, imbalance_ratio=1000.0, max_per_class=40,
                          image_size=32 if name == "cifar10" else 16)
    if name == "image_folder":
        for split in ("train", "test"):
            _make_image_tree(tmp_path / split, {"ant": ["a.png", "b.png", "c.png"], "bee": ["a.png", "b.png", "c.png"]})
        data_cfg.root, data_cfg.max_per_class = str(tmp_path), 3
    with pytest.raises(UserError) as refused:
        build_datasets(data_cfg)
    message = str(refused.value)
    assert "\n" not in message and "data.imbalance_ratio" in message and "data.max_per_class" in message
    empty = "1 of 2 classes have no training image (classes 1 'bee')" if name == "image_folder" else \
        "5 of 10 classes have no training image (classes 5 "
    assert empty in message, message
