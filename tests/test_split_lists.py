"""Split-list datasets (ImageNet-LT, Places-LT, iNaturalist 2018, split_list): parsing, class
counts and shot groups, decoders and transforms, and every bad input named by file and line.

Everything runs on small JPEG trees written by tools/make_fake_imagenet_lt.py under tmp_path.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import ROOT
from core import LOGGER_NAME
from core.errors import UserError
from data.builder import build_datasets
from data.datasets import FileDataset, PathTable, report_unreadable
from data.decoding import read_pil, read_tensor
from data.registry import DATASETS
from data.split_lists import STANDARD_SPLITS, read_inaturalist_json, read_list_file
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, preset_eval_transform, preset_train_transform
from engine import config as config_module
from engine.config import DataConfig, load_config
from engine.metrics import accuracy_report, shot_group
from tools import make_fake_imagenet_lt as fake

COUNTS = list(fake.DEFAULT_COUNTS)          # 150, 110, 60, 30, 15, 6
GROUPS = ["many", "many", "medium", "medium", "few", "few"]


def data_config(root, name="imagenet_lt", **keys) -> DataConfig:
    """A small-image data section over a fake dataset; validated like a loaded config."""
    values = dict(name=name, root=str(root), num_classes=0, profile="none", image_size=24, eval_resize=28,
                  transform="resized_crop_jitter", mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    values.update(keys)
    data = DataConfig(**values)
    config_module.validate(config_module.Config(data=data))
    return data


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_lt")
    fake.make_fake_dataset(str(root))
    return root


@pytest.fixture
def imagenet_copy(imagenet_root, tmp_path):
    """A copy that a test may break."""
    root = tmp_path / "copy"
    shutil.copytree(imagenet_root, root)
    return root


def line_of(list_path, index):
    """(1-based line number, relative path) of the index-th entry of a list file."""
    with open(list_path) as f:
        lines = f.read().splitlines()
    return index + 1, lines[index].rsplit(" ", 1)[0]


# ---------------------------------------------------------------------------------------------
# Parsing, counts, shot groups


def test_imagenet_lt_lists_counts_and_shot_groups(imagenet_root):
    train, val = build_datasets(data_config(imagenet_root, eval_split="val"))
    _, test = build_datasets(data_config(imagenet_root), eval_split="test")
    counts = np.bincount(train.targets, minlength=train.num_classes).tolist()
    assert counts == COUNTS and len(val) == 5 * 6 and len(test) == 10 * 6
    assert [shot_group(n) for n in counts] == GROUPS
    assert train.classes[0] == "n01440764"                    # the wnid folder names the class
    image, target = train[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    assert test[0][0].shape == (3, 24, 24)
    # A model that always says class 0: the groups are means over their classes' accuracies.
    targets = np.asarray(test.targets)
    report = accuracy_report(np.zeros_like(targets), targets, counts)
    assert report["many"] == pytest.approx(50.0) and report["medium"] == 0 and report["few"] == 0


def test_num_classes_default_refuses_empty_classes(imagenet_root):
    """ImageNet-LT has 1000 classes: 6 listed ones leave 994 without images, which LDAM cannot take."""
    with pytest.raises(UserError, match=r"994 of 1000 classes have no training image"):
        build_datasets(data_config(imagenet_root, num_classes=None))


@pytest.mark.parametrize("layout", ["train", "data_256"])
def test_places_lt_both_layouts(tmp_path, layout):
    fake.make_fake_dataset(str(tmp_path), dataset="places_lt", places_layout=layout, counts=[30, 5],
                           val_per_class=1, test_per_class=2)
    train, test = build_datasets(data_config(tmp_path, name="places_lt", transform="resized_crop"))
    assert np.bincount(train.targets).tolist() == [30, 5] and len(test) == 4
    assert train.paths[0].startswith(os.path.join(str(tmp_path), layout))
    assert train.classes == ["ascene0", "bscene1"]
    assert train[0][0].shape == (3, 24, 24)


def test_root_matching_nothing_names_both_places_layouts(tmp_path):
    fake.make_fake_dataset(str(tmp_path), dataset="places_lt", places_layout="data_256", counts=[3, 2],
                           val_per_class=1, test_per_class=1)
    wrong = tmp_path / "data_256"     # one level too deep: the lists say data_256/a/...
    for name in os.listdir(tmp_path):
        if name.endswith(".txt"):
            shutil.copy(tmp_path / name, wrong / name)
    with pytest.raises(UserError) as error:
        build_datasets(data_config(wrong, name="places_lt"))
    message = str(error.value)
    assert "matches none of the first 5 images" in message and "Places_LT_train.txt" in message
    assert "train/airfield/00004851.jpg" in message and "data_256/a/airfield/" in message
    assert "'data_256'" in message and "\n" not in message


def test_inaturalist_json_matches_annotations_by_image_id(tmp_path):
    written = fake.make_fake_dataset(str(tmp_path), dataset="inat2018", inat_json=True, counts=[25, 12, 4],
                                     val_per_class=2)
    listed = read_inaturalist_json(written["train"])
    # The fake JSON lists annotations in another order than images; labels follow the image ids.
    folder_labels = [int(path.split("/")[-2]) for path in listed.paths]
    assert listed.labels.tolist() == folder_labels
    train, val = build_datasets(data_config(tmp_path, name="inat2018", eval_split="val"))
    _, test = build_datasets(data_config(tmp_path, name="inat2018"), eval_split="test")
    assert np.bincount(train.targets).tolist() == [25, 12, 4]
    assert train.classes == ["species 0", "species 1", "species 2"]
    assert val.paths == test.paths and len(val) == 6        # val is iNaturalist's test set
    assert val.where(0) == f"{written['val']}: images[0]: "


def test_inaturalist_list_files_are_preferred(tmp_path):
    fake.make_fake_dataset(str(tmp_path), dataset="inat2018", counts=[3, 2], val_per_class=1)
    train, _ = build_datasets(data_config(tmp_path, name="inat2018"))
    assert train.origin.source.endswith("iNaturalist18_train.txt")


def test_generic_split_list_infers_classes_and_can_be_subsampled(imagenet_root):
    keys = dict(name="split_list", num_classes=None, train_list="ImageNet_LT_train.txt",
                test_list=os.path.join(str(imagenet_root), "ImageNet_LT_test.txt"))
    train, _ = build_datasets(data_config(imagenet_root, **keys))
    assert train.num_classes == 6 and len(train) == sum(COUNTS)
    subset, _ = build_datasets(data_config(imagenet_root, profile="longtail", imbalance_ratio=10,
                                           max_per_class=20, **keys))
    assert np.bincount(subset.targets).tolist() == [20, 12, 7, 5, 3, 2]   # 20 * 10^(-i/5)
    assert subset.where(0).startswith(os.path.join(str(imagenet_root), "ImageNet_LT_train.txt:"))


def test_list_parsing_allows_spaces_and_blank_lines(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("a dir/x 1.jpg 3\n\n  b/y.jpg\t0  \n")
    split = read_list_file(str(listed))
    assert split.paths == ["a dir/x 1.jpg", "b/y.jpg"] and split.labels.tolist() == [3, 0]
    assert split.origin.describe(1) == f"{listed}:3"


def test_path_table():
    table = PathTable(["a/b.jpg", "é/ü.jpg", ""])
    assert len(table) == 3 and table[1] == "é/ü.jpg" and table[-1] == "" and list(table)[0] == "a/b.jpg"
    assert table.take([1, 0]) == ["é/ü.jpg", "a/b.jpg"]
    with pytest.raises(IndexError):
        table[3]


# ---------------------------------------------------------------------------------------------
# Bad input, each named by file and line


@pytest.mark.parametrize("bad_line", ["train/n01440764/extra.JPEG", "train/n01440764/extra.JPEG three",
                                      "train/n01440764/extra.JPEG 1.5"])
def test_malformed_line_names_file_and_line(imagenet_copy, bad_line):
    train_list = imagenet_copy / "ImageNet_LT_train.txt"
    lines = train_list.read_text().splitlines()
    lines.insert(6, bad_line)
    train_list.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"ImageNet_LT_train.txt:7: expected 'relative/path.jpg <integer label>', "
                                        rf"got '{bad_line}'"):
        build_datasets(data_config(imagenet_copy))


@pytest.mark.parametrize("label, num_classes, split", [(6, 6, "train"), (-1, 6, "train"), (9, 0, "test")])
def test_label_out_of_range_is_refused_at_load_time(imagenet_copy, label, num_classes, split):
    list_path = imagenet_copy / f"ImageNet_LT_{split}.txt"
    lines = list_path.read_text().splitlines()
    lines[3] = f"{lines[3].rsplit(' ', 1)[0]} {label}"
    list_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"ImageNet_LT_{split}.txt:4: label {label} is outside 0..5"):
        build_datasets(data_config(imagenet_copy, num_classes=num_classes))


def test_missing_list_and_missing_image(imagenet_copy):
    with pytest.raises(UserError, match=r"no ImageNet-LT val list in data.root .*ImageNet_LT_val.txt"):
        os.remove(imagenet_copy / "ImageNet_LT_val.txt")
        build_datasets(data_config(imagenet_copy, eval_split="val"))
    with pytest.raises(UserError, match=r"key 'data.test_list': list file .*nowhere.txt not found"):
        build_datasets(data_config(imagenet_copy, test_list="nowhere.txt"))
    number, relative = line_of(imagenet_copy / "ImageNet_LT_train.txt", 9)
    os.remove(imagenet_copy / relative)
    train, _ = build_datasets(data_config(imagenet_copy))
    with pytest.raises(UserError, match=rf"ImageNet_LT_train.txt:{number}: image file .*{relative} is missing"):
        train[9]


def corrupt(root, list_name, index, how="truncate"):
    """Break the index-th listed image; returns (line number, relative path)."""
    number, relative = line_of(root / list_name, index)
    path = root / relative
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if how == "truncate" else b"not a JPEG at all")
    return number, relative


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_corrupt_jpeg_is_named(imagenet_copy, decoder, how):
    number, relative = corrupt(imagenet_copy, "ImageNet_LT_train.txt", 4, how)
    train, _ = build_datasets(data_config(imagenet_copy, decoder=decoder))
    with pytest.raises(UserError, match=rf"ImageNet_LT_train.txt:{number}: image file .*{relative} cannot be read "
                                        rf"\(.*\); .*data.skip_corrupt=true"):
        train[4]


def test_worker_errors_arrive_as_one_line(imagenet_copy):
    number, relative = corrupt(imagenet_copy, "ImageNet_LT_train.txt", 0)
    train, _ = build_datasets(data_config(imagenet_copy))
    batches = iter(DataLoader(train, batch_size=8, num_workers=2))
    try:
        with pytest.raises(UserError) as error:
            for _ in batches:
                pass
    finally:
        # The traceback keeps the iterator in a reference cycle: left to the garbage collector, its
        # workers' shutdown waited ~10 s inside whichever test came next.
        batches._shutdown_workers()
    message = str(error.value)
    assert message.startswith(f"{imagenet_copy / 'ImageNet_LT_train.txt'}:{number}: image file ")
    assert relative in message and "\n" not in message and "Traceback" not in message


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_corrupt_replaces_within_the_class_and_counts(imagenet_copy, num_workers, caplog):
    broken = [corrupt(imagenet_copy, "ImageNet_LT_train.txt", index) for index in (2, 5)]
    train, _ = build_datasets(data_config(imagenet_copy, skip_corrupt=True))
    loader = DataLoader(train, batch_size=16, num_workers=num_workers)
    targets = torch.cat([batch_targets for _, batch_targets in loader])
    assert targets.tolist() == train.targets            # replaced by images of the same class
    skipped = train.take_unreadable()
    assert sorted(skipped) == sorted(f"{train.where(i)}{train.paths[i]}" for i in (2, 5))
    assert all(f"ImageNet_LT_train.txt:{number}: " in " ".join(skipped) for number, _ in broken)
    assert train.take_unreadable() == []                 # counted once per report
    for _ in loader:
        pass
    with caplog.at_level("WARNING", logger=LOGGER_NAME):
        assert report_unreadable([train], "epoch 0") == 2
    assert "epoch 0: 2 unreadable image(s) replaced" in caplog.text


def test_skip_corrupt_gives_up_when_a_class_has_no_readable_image(tmp_path):
    fake.make_fake_dataset(str(tmp_path), counts=[3, 1], val_per_class=1, test_per_class=1)
    number, _ = corrupt(tmp_path, "ImageNet_LT_train.txt", [i for i, line in enumerate(
        (tmp_path / "ImageNet_LT_train.txt").read_text().splitlines()) if line.endswith(" 1")][0])
    train, _ = build_datasets(data_config(tmp_path, skip_corrupt=True))
    index = train.targets.index(1)
    with pytest.raises(UserError, match=rf"ImageNet_LT_train.txt:{number}: .*nor can any other image of class 1"):
        train[index]


def test_file_dataset_pickles_with_its_marks(imagenet_root):
    import pickle

    train, _ = build_datasets(data_config(imagenet_root, skip_corrupt=True))
    copy = pickle.loads(pickle.dumps(train.subset([3, 1])))
    assert copy.paths == [train.paths[3], train.paths[1]] and copy.where(0) == train.where(3)
    assert copy.unreadable.tolist() == [0, 0]


# ---------------------------------------------------------------------------------------------
# Decoders and transforms


def test_decoders_agree(imagenet_root):
    path = str(imagenet_root / line_of(imagenet_root / "ImageNet_LT_train.txt", 0)[1])
    pil_pixels = torch.from_numpy(np.asarray(read_pil(path)).copy()).permute(2, 0, 1)
    assert torch.equal(pil_pixels, read_tensor(path))                # the same libjpeg-turbo decode
    for preset in ("pad_crop_flip", "resized_crop", "resized_crop_jitter"):
        on_pil = preset_train_transform(preset, 24, 4, True, IMAGENET_MEAN, IMAGENET_STD, tensor_input=False)
        on_tensor = preset_train_transform(preset, 24, 4, True, IMAGENET_MEAN, IMAGENET_STD, tensor_input=True)
        for seed in range(5):   # the same random draws: the same crop, flip and jitter
            torch.manual_seed(seed)
            a = on_pil(read_pil(path))
            torch.manual_seed(seed)
            b = on_tensor(read_tensor(path))
            levels = float((a - b).abs().max()) * 255 * min(IMAGENET_STD)
            assert a.shape == b.shape == (3, 24, 24) and levels <= 3.01, (preset, levels)
    evaluated = [preset_eval_transform(24, 28, IMAGENET_MEAN, IMAGENET_STD, tensor_input=t)(image)
                 for t, image in ((False, read_pil(path)), (True, read_tensor(path)))]
    assert float((evaluated[0] - evaluated[1]).abs().max()) * 255 * min(IMAGENET_STD) <= 1.01


def test_torchvision_decoder_reads_other_formats(tmp_path):
    from PIL import Image

    for name, mode in (("gray.png", "L"), ("cmyk.jpg", "CMYK"), ("plain.bmp", "RGB")):
        Image.new(mode, (7, 5)).save(tmp_path / name)
        assert read_tensor(str(tmp_path / name)).shape == (3, 5, 7)
    (tmp_path / "empty.jpg").write_bytes(b"")
    dataset = FileDataset([str(tmp_path / "empty.jpg")], [0], None, ["a"], decoder="torchvision")
    with pytest.raises(UserError, match="empty.jpg cannot be read"):
        dataset[0]


# ---------------------------------------------------------------------------------------------
# Config keys


def test_the_registry_is_the_list_of_split_list_datasets():
    # one list: the registry; the config asks it which data.name values read list files
    assert DATASETS.names(split_lists=True) == sorted(STANDARD_SPLITS)
    assert DATASETS.names(long_tailed=True) == ["imagenet_lt", "inat2018", "places_lt"]


@pytest.mark.parametrize("overrides, message", [
    (["data.eval_split=val"], r"key 'data.eval_split' is 'val', but digits has no validation split"),
    (["data.train_list=x.txt"], r"key 'data.train_list' is for split-list datasets"),
    (["data.num_classes=10"], r"key 'data.num_classes' is for split-list datasets"),
    (["data.name=imagenet_lt"], r"key 'data.profile' is 'longtail', but imagenet_lt is long-tailed already"),
    (["data.name=split_list", "data.profile=none"], r"key 'data.train_list' must name the training list"),
    (["data.name=split_list", "data.train_list=a.txt", "data.eval_split=val"], r"key 'data.val_list' must name"),
    (["data.eval_resize=8"], r"key 'data.eval_resize' is 8; it must be 0 \(no resize\) or >= data.image_size \(16\)"),
    (["data.transform=random"], r"valid choices: pad_crop_flip, resized_crop, resized_crop_jitter"),
    (["data.decoder=opencv"], r"valid choices: torchvision, pil"),
])
def test_config_refuses(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(os.path.join(ROOT, "configs/quickstart.yaml"), overrides)


def test_val_split_of_a_dataset_without_one():
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"))
    with pytest.raises(UserError, match=r"the val split was asked for, but data.name digits has only train and test"):
        build_datasets(cfg.data, eval_split="val")
