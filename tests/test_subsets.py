"""data.subset: which n_i images of each class make the imbalanced CIFAR training set.

`ldam_drw` is checked index for index against Cao et al.'s procedure (imbalance_cifar.py of
kaidic/LDAM-DRW; docs/REPRODUCTION.md, "Which CIFAR training subset each number came from") written
out below with numpy's global generator, exactly as that file runs it; `first` against the RSG
authors' version of the same file (shuffle commented out). The CIFAR files are generated here,
with the labels in a random order and every image carrying its own index in its first pixels, so
an image names the file position it came from.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from core.errors import UserError
from data.builder import build_datasets
from data.imbalance import resolve_subset, select_like_ldam_drw, select_per_class, select_subset
from engine.config import load_config
from tests.conftest import write_config

# Training images per class in the generated files: n_max / rho >= 1 at every rho tested keeps an
# image in every class (a class left empty is refused at load).
PER_CLASS = {"cifar10": 100, "cifar100": 100}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def _pickle(path, content):
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=4)   # faster to read than CIFAR's protocol 2; the loader reads both


def _rows(indices: np.ndarray, rng) -> np.ndarray:
    """(N, 3072) uint8 rows whose first two bytes spell the image's index in the file."""
    rows = rng.integers(0, 256, size=(len(indices), 3072), dtype=np.uint8)
    rows[:, 0], rows[:, 1] = indices % 256, indices // 256
    return rows


def write_cifar(root: str, name: str, seed: int = 0) -> np.ndarray:
    """torchvision's on-disk CIFAR-10 or CIFAR-100 with shuffled labels; returns the training labels."""
    rng = np.random.default_rng(seed)
    classes = NUM_CLASSES[name]
    labels = rng.permutation(np.repeat(np.arange(classes), PER_CLASS[name]))
    rows = _rows(np.arange(len(labels)), rng)
    test_labels = np.tile(np.arange(classes), 2)
    test = {b"data": _rows(np.arange(len(test_labels)), rng)}
    names = [f"class{i}".encode() for i in range(classes)]
    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder)
        for part, chunk in enumerate(np.array_split(np.arange(len(labels)), 5)):
            _pickle(os.path.join(folder, f"data_batch_{part + 1}"), {b"data": rows[chunk], b"labels": labels[chunk].tolist()})
        _pickle(os.path.join(folder, "test_batch"), {**test, b"labels": test_labels.tolist()})
        _pickle(os.path.join(folder, "batches.meta"), {b"label_names": names})
    else:
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder)
        _pickle(os.path.join(folder, "train"), {b"data": rows, b"fine_labels": labels.tolist()})
        _pickle(os.path.join(folder, "test"), {**test, b"fine_labels": test_labels.tolist()})
        _pickle(os.path.join(folder, "meta"), {b"fine_label_names": names})
    return labels


def ldam_drw_counts(num_images: int, classes: int, imb_type: str, imb_factor: float) -> list[int]:
    """Cao et al.'s get_img_num_per_cls, as written there (imb_factor = 1 / rho)."""
    img_max = int(num_images / classes)
    if imb_type == "exp":
        return [int(img_max * (imb_factor ** (c / (classes - 1.0)))) for c in range(classes)]
    return [int(img_max)] * (classes // 2) + [int(img_max * imb_factor)] * (classes // 2)


def ldam_drw_procedure(labels: np.ndarray, counts: list[int], rand_number: int = 0) -> np.ndarray:
    """Cao et al.'s __init__ + gen_imbalanced_data on the global generator: the file positions of
    their new_data, in their order."""
    saved = np.random.get_state()
    try:
        np.random.seed(rand_number)
        picked = []
        for the_class, the_img_num in zip(np.unique(labels), counts):
            idx = np.where(labels == the_class)[0]
            np.random.shuffle(idx)
            picked.append(idx[:the_img_num])
        return np.concatenate(picked)
    finally:
        np.random.set_state(saved)


def rsg_code_procedure(labels: np.ndarray, counts: list[int]) -> np.ndarray:
    """The RSG authors' copy of the same file: the shuffle commented out."""
    return np.concatenate([np.where(labels == c)[0][:n] for c, n in zip(np.unique(labels), counts)])


def positions(dataset) -> np.ndarray:
    """The file position each image of an ArrayDataset came from (spelled in the red of its first
    two pixels: a CIFAR row is channel-major)."""
    red = dataset.images[:, 0, :2, 0].astype(np.int64)
    return red[:, 0] + 256 * red[:, 1]


def build_train(tmp_path, name: str, root: str, *overrides: str):
    tree = {"data": {"name": name, "root": root, "max_per_class": PER_CLASS[name], "num_workers": 0},
            "output_dir": str(tmp_path / "run")}
    cfg = load_config(write_config(tmp_path / "subset.yaml", tree), list(overrides))
    return build_datasets(cfg.data)[0]


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def cifar(request, tmp_path_factory):
    root = str(tmp_path_factory.mktemp(request.param))
    return request.param, root, write_cifar(root, request.param)


@pytest.mark.parametrize("profile, imb_type", [("longtail", "exp"), ("step", "step")])
@pytest.mark.parametrize("rho", [100, 50, 10, 3.7])
def test_ldam_drw_subset_is_cao_et_als_index_for_index(cifar, tmp_path, profile, imb_type, rho):
    name, root, labels = cifar
    train = build_train(tmp_path, name, root, "data.subset=ldam_drw", f"data.profile={profile}",
                        f"data.imbalance_ratio={rho}")
    counts = ldam_drw_counts(len(labels), NUM_CLASSES[name], imb_type, 1 / rho)
    expected = ldam_drw_procedure(labels, counts)
    assert positions(train).tolist() == expected.tolist()           # same images, same order
    assert train.targets == labels[expected].tolist()


def test_ldam_drw_seed_is_their_rand_number(cifar, tmp_path):
    name, root, labels = cifar
    train = build_train(tmp_path, name, root, "data.subset=ldam_drw", "data.subset_seed=5")
    counts = ldam_drw_counts(len(labels), NUM_CLASSES[name], "exp", 0.01)
    assert positions(train).tolist() == ldam_drw_procedure(labels, counts, rand_number=5).tolist()
    assert positions(train).tolist() != ldam_drw_procedure(labels, counts).tolist()


@pytest.mark.parametrize("profile, imb_type", [("longtail", "exp"), ("step", "step")])
def test_first_subset_is_the_rsg_codes(cifar, tmp_path, profile, imb_type):
    name, root, labels = cifar
    train = build_train(tmp_path, name, root, f"data.profile={profile}")        # data.subset: first, the default
    expected = rsg_code_procedure(labels, ldam_drw_counts(len(labels), NUM_CLASSES[name], imb_type, 0.01))
    assert positions(train).tolist() == sorted(expected.tolist())  # the same images, kept in file order


def test_ldam_drw_subset_leaves_the_global_generator_alone():
    labels = np.repeat(np.arange(4), 30)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    select_like_ldam_drw(labels, [30, 10, 5, 2])
    assert np.array_equal(np.random.get_state()[1], before)


def test_the_subsets_differ_and_share_counts():
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(10), 100))
    counts = ldam_drw_counts(len(labels), 10, "exp", 0.1)
    picks = {subset: select_subset(labels, counts, subset, seed)
             for subset, seed in [("first", None), ("ldam_drw", None), ("seeded", 0)]}
    for picked in picks.values():
        assert np.bincount(labels[picked], minlength=10).tolist() == counts
    assert len({tuple(sorted(p.tolist())) for p in picks.values()}) == 3


def test_old_subset_seed_still_means_seeded(tmp_path, tiny_cifar_root):
    labels = np.tile(np.arange(10), 40)             # conftest's tiny CIFAR-10: interleaved labels
    old = build_train(tmp_path, "cifar10", tiny_cifar_root, "data.max_per_class=40", "data.subset_seed=3",
                      "data.imbalance_ratio=10")
    counts = ldam_drw_counts(len(labels), 10, "exp", 0.1)
    assert old.targets == labels[select_per_class(labels, counts, shuffle_seed=3)].tolist()
    assert resolve_subset("first", 3) == ("seeded", 3)
    assert resolve_subset("seeded", 3) == ("seeded", 3)
    assert resolve_subset("ldam_drw", None) == ("ldam_drw", 0)
    assert resolve_subset("first", None) == ("first", None)


def test_seeded_without_a_seed_is_refused_at_load(tmp_path):
    path = write_config(tmp_path / "c.yaml", {"data": {"name": "digits"}})
    with pytest.raises(UserError, match="data.subset_seed.*data.subset=seeded"):
        load_config(path, ["data.subset=seeded"])
    with pytest.raises(UserError, match="first, ldam_drw, seeded"):
        load_config(path, ["data.subset=shuffled"])


def test_image_folder_gets_the_same_choice(tmp_path):
    """An image folder lists each class's files in name order: the JPEG CIFAR-10 copy (0000.jpg ...
    in CIFAR's order) then gets the very images the CIFAR files would give."""
    from PIL import Image

    per_class = [9, 7, 5]
    for split in ("train", "test"):
        for c, n in enumerate(per_class):
            folder = tmp_path / "folder" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n if split == "train" else 1):
                Image.new("RGB", (4, 4), (c, i, 0)).save(folder / f"{i:04d}.png")
    tree = {"data": {"name": "image_folder", "root": str(tmp_path / "folder"), "image_size": 4,
                     "imbalance_ratio": 3, "subset": "ldam_drw", "num_workers": 0},
            "output_dir": str(tmp_path / "run")}
    train = build_datasets(load_config(write_config(tmp_path / "f.yaml", tree)).data)[0]
    labels = np.repeat(np.arange(3), per_class)
    counts = [9, 5, 3]                               # n_max 9 (the largest folder), rho 3
    expected = ldam_drw_procedure(labels, counts)    # positions in the sorted listing
    names = [f"class{labels[i]}/{i - per_class[0] * (labels[i] >= 1) - per_class[1] * (labels[i] >= 2):04d}.png"
             for i in expected]
    got = [os.path.relpath(train.paths[i], tmp_path / "folder" / "train") for i in range(len(train))]
    assert got == names
