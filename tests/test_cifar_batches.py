"""scripts/write_cifar_batches.py: an image folder written back as CIFAR-10's python batches, each
position holding the next image of its label's class, readable by this project and by torchvision."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from data.cifar import load_cifar
from tools.cifar_batches import TEST_BATCHES, TRAIN_BATCHES

CLASSES = ("cat", "dog", "frog")


def make_image_folder(root, labels: dict) -> dict:
    """PNG images (lossless) whose pixels encode (split, class, index in class); their pixels by path."""
    pixels = {}
    rng = np.random.default_rng(0)
    for split, names in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
        counts = np.bincount(np.concatenate([labels[name] for name in names]), minlength=len(CLASSES))
        for class_index, name in enumerate(CLASSES):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for number in range(counts[class_index]):
                image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                path = os.path.join(folder, f"{number:04d}.png")
                Image.fromarray(image).save(path)
                pixels[path] = image
    return pixels


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(1)
    labels = {name: rng.integers(0, len(CLASSES), size=7).tolist() for name in TRAIN_BATCHES + TEST_BATCHES}
    labels_path = tmp_path / "labels.json"
    labels_path.write_text(json.dumps({"labels": labels}))
    pixels = make_image_folder(tmp_path / "images", labels)
    result = run_script("scripts/write_cifar_batches.py", str(tmp_path / "images"), str(labels_path),
                        str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    return tmp_path, labels, pixels


def expected_order(root, labels, names, split):
    """Position i: the next unused image of class labels[i], in file-name order."""
    taken = {c: 0 for c in range(len(CLASSES))}
    paths = []
    for name in names:
        for label in labels[name]:
            paths.append(os.path.join(root, "images", split, CLASSES[label], f"{taken[label]:04d}.png"))
            taken[label] += 1
    return paths


def test_each_position_holds_the_next_image_of_its_class(written):
    root, labels, pixels = written
    for train, names, split in ((True, TRAIN_BATCHES, "train"), (False, TEST_BATCHES, "test")):
        images, targets, classes = load_cifar(str(root / "out"), "cifar10", train)
        assert classes == list(CLASSES)
        assert targets.tolist() == sum((labels[name] for name in names), [])
        for image, path in zip(images, expected_order(str(root), labels, names, split)):
            assert np.array_equal(image, pixels[path]), path


def test_torchvisions_reader_takes_the_files_once_its_md5_check_is_passed(written, monkeypatch):
    import torchvision.datasets.cifar as cifar

    root, labels, pixels = written
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    dataset = cifar.CIFAR10(str(root / "out"), train=True, download=False)
    assert dataset.classes == list(CLASSES)
    assert dataset.targets == sum((labels[name] for name in TRAIN_BATCHES), [])
    first = expected_order(str(root), labels, TRAIN_BATCHES, "train")[0]
    assert np.array_equal(dataset.data[0], pixels[first])


def test_a_class_with_another_number_of_images_than_the_labels_ask_is_refused(tmp_path):
    labels = {name: [0, 1, 2, 0] for name in TRAIN_BATCHES + TEST_BATCHES}
    (tmp_path / "labels.json").write_text(json.dumps({"labels": labels}))
    make_image_folder(tmp_path / "images", labels)
    os.remove(tmp_path / "images" / "train" / "dog" / "0000.png")
    result = run_script("scripts/write_cifar_batches.py", str(tmp_path / "images"),
                        str(tmp_path / "labels.json"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "dog holds 4 images, CIFAR's labels ask for 5" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_never_written_over(written):
    root, _, _ = written
    before = (root / "out" / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    result = run_script("scripts/write_cifar_batches.py", str(root / "images"), str(root / "labels.json"),
                        str(root / "out"))
    assert result.returncode == 2 and "exists and is not empty" in result.stderr
    assert (root / "out" / "cifar-10-batches-py" / "data_batch_1").read_bytes() == before


FAKE_AUTHORS_SCRIPT = '''
import sys, torch, torchvision, torchvision.datasets as datasets
from helper import HELPED                                   # the checkout is on the path
data = datasets.CIFAR10(root="./data", train=True, download=True)   # md5 differs: passes only when patched
net = torch.nn.Linear(3, 2).cuda(0)
margins = torch.cuda.FloatTensor([0.5, 0.25])
x = torch.ones(4, 3).cuda(0, non_blocking=True)
torch.save({"epoch": 3}, "ckpt.pth")
state = torch.load("ckpt.pth", map_location="cuda:0")
open("done.txt", "w").write(f"{len(data)} {net(x).shape[0]} {margins.device} {state['epoch']} {HELPED} {sys.argv[1:]}")
'''


def test_the_launcher_runs_an_authors_script_unchanged_on_the_cpu(written):
    """tools/authors_code.py: .cuda(), torch.cuda.FloatTensor, torch.load to 'cuda:0' and torchvision's
    md5 check all pass on a machine without a GPU, the script itself untouched."""
    root, labels, _ = written
    code = root / "checkout"
    code.mkdir()
    (code / "cifar_train.py").write_text(FAKE_AUTHORS_SCRIPT)
    (code / "helper.py").write_text("HELPED = 'yes'\n")
    result = run_script("tools/authors_code.py", "--code", str(code), "--data-root", str(root / "out"),
                        "--workdir", str(root / "work"), "--", "--loss_type", "LDAM")
    assert result.returncode == 0, result.stderr
    train_images = sum(len(labels[name]) for name in TRAIN_BATCHES)
    assert (root / "work" / "done.txt").read_text() == f"{train_images} 4 cpu 3 yes ['--loss_type', 'LDAM']"
