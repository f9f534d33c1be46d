"""Shared fixtures: a tiny CIFAR-10 folder, tiny run configs (the project is installed: scripts/setup.sh).

Everything is written under pytest's tmp_path; nothing reads /work/shared or downloads.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYTHON = sys.executable

# The tiny long-tailed subset every run fixture uses: n_max = 40, rho = 10 gives
# 40, 30, 23, 18, 14, 11, 8, 6, 5, 4 images (159 in all, 4 steps of 32 per epoch).
TINY_MAX_PER_CLASS = 40
TINY_IMBALANCE_RATIO = 10
TINY_COUNTS = [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
TINY_BATCH = 32
TINY_STEPS_PER_EPOCH = sum(TINY_COUNTS) // TINY_BATCH

CIFAR_TRAIN_PER_CLASS = 40
CIFAR_TEST_PER_CLASS = 10
CIFAR_CLASSES = [f"class{i}" for i in range(10)]


# ---------------------------------------------------------------------------------------------
# Tiny CIFAR-10 in torchvision's on-disk python format


def snapshot(folder) -> dict:
    """Every file under `folder` (relative path -> sha256), the lock file aside."""
    from engine.run_folder import LOCK_NAME

    digests = {}
    for path in sorted(glob.glob(os.path.join(str(folder), "**", "*"), recursive=True)):
        if os.path.isfile(path) and os.path.basename(path) != LOCK_NAME:
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def read_jsonl(path) -> list:
    """The records of a JSON-lines file (metrics.jsonl)."""
    with open(path) as f:
        return [json.loads(line) for line in f]


def _pickle_to(path, content) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _class_images(rng, labels: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 channel-major rows: noise plus a class-dependent colour, so that the
    classes are learnable a little and the rows are valid CIFAR rows."""
    rows = rng.integers(0, 64, size=(len(labels), 3072), dtype=np.int64)
    for plane in range(3):
        rows[:, plane * 1024:(plane + 1) * 1024] += ((labels[:, None] * (plane + 3) * 37) % 192)
    return rows.clip(0, 255).astype(np.uint8)


def write_tiny_cifar10(root, train_per_class: int = CIFAR_TRAIN_PER_CLASS,
                       test_per_class: int = CIFAR_TEST_PER_CLASS, seed: int = 0) -> str:
    """Write root/cifar-10-batches-py with data_batch_1..5, test_batch and batches.meta.

    Training labels are interleaved (0, 1, ..., 9, 0, 1, ...) and split over the five batches.
    Returns `root` (the value for data.root).
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(str(root), "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_labels = np.tile(np.arange(10), train_per_class)
    train_rows = _class_images(rng, train_labels)
    for index, part in enumerate(np.array_split(np.arange(len(train_labels)), 5)):
        _pickle_to(os.path.join(folder, f"data_batch_{index + 1}"),
                   {b"batch_label": f"training batch {index + 1} of 5".encode(),
                    b"data": train_rows[part], b"labels": train_labels[part].tolist()})
    test_labels = np.tile(np.arange(10), test_per_class)
    _pickle_to(os.path.join(folder, "test_batch"),
               {b"batch_label": b"testing batch 1 of 1", b"data": _class_images(rng, test_labels),
                b"labels": test_labels.tolist()})
    _pickle_to(os.path.join(folder, "batches.meta"),
               {b"label_names": [name.encode() for name in CIFAR_CLASSES], b"num_cases_per_batch": 80,
                b"num_vis": 3072})
    return str(root)


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory) -> str:
    """A CIFAR-10-format folder: 40 training and 10 test images per class."""
    return write_tiny_cifar10(tmp_path_factory.mktemp("cifar"))


# ---------------------------------------------------------------------------------------------
# Tiny run configs


def tiny_config_dict(output_dir, **sections) -> dict:
    """A config for a run of a few seconds on the CPU: digits at 16 px, 159 training images,
    ResNet-32 with a narrow RSG generating from epoch 1, DRW from epoch 1, lr steps inside.

    `sections` update the sections, e.g. train={"epochs": 4}, data={"name": "cifar10", ...}.
    """
    tree = {
        "data": {"name": "digits", "imbalance_ratio": TINY_IMBALANCE_RATIO,
                 "max_per_class": TINY_MAX_PER_CLASS, "image_size": 16, "crop_padding": 2,
                 "hflip": False, "mean": [0.3, 0.3, 0.3], "std": [0.4, 0.4, 0.4],
                 "batch_size": TINY_BATCH, "eval_batch_size": 256, "num_workers": 0},
        "model": {"backbone": "resnet32", "classifier": "auto"},
        "rsg": {"enabled": True, "num_centers": 3, "contrastive_channels": 8, "threshold_epoch": 1},
        "loss": {"name": "ldam", "reweight": "drw", "reweight_start": 1},
        "optim": {"lr": 0.05, "warmup_epochs": 1, "milestones": [1, 2], "decay": 0.1},
        "train": {"epochs": 2, "seed": 0, "device": "cpu", "progress": False, "log_every": 2},
        "output_dir": str(output_dir),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            tree.setdefault(section, {}).update(values)
        else:
            tree[section] = values
    return tree


def write_config(path, tree: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(tree, f, sort_keys=False)
    return str(path)


@pytest.fixture
def make_tiny_config(tmp_path):
    """make_tiny_config(name="tiny", **sections) -> path of a tiny config YAML whose output_dir
    is tmp_path/runs/<name>."""
    def make(name: str = "tiny", **sections) -> str:
        tree = tiny_config_dict(tmp_path / "runs" / name, **sections)
        return write_config(tmp_path / f"{name}.yaml", tree)
    return make


@pytest.fixture
def tiny_config(make_tiny_config) -> str:
    """The path of the default tiny config (digits, 2 epochs, RSG on)."""
    return make_tiny_config()


# The data section that points a tiny config at the CIFAR-10 folder of `tiny_cifar_root`
# (add "root"): 32 px with the CIFAR normalisation; n_max 40, rho 10 as for the digits.
CIFAR_DATA = {"name": "cifar10", "image_size": 32, "crop_padding": 4, "hflip": True,
              "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]}


@pytest.fixture
def tiny_cifar_config(make_tiny_config, tiny_cifar_root) -> str:
    """The path of a tiny config on the tiny CIFAR-10 folder (2 epochs, RSG on from epoch 1)."""
    return make_tiny_config("tiny_cifar", data=dict(CIFAR_DATA, root=tiny_cifar_root))


@pytest.fixture
def restore_torch_globals():
    """fit() switches deterministic algorithms on and reseeds: undo it for the next tests (and run
    with one intra-op thread meanwhile)."""
    with torch_globals_restored():
        yield


@contextlib.contextmanager
def torch_globals_restored(threads: int = 1):
    """Run with `threads` intra-op threads; afterwards restore the thread count, the deterministic
    flags, cudnn.benchmark and the global RNG that fit() changes."""
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    rng = torch.get_rng_state()
    num_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.set_rng_state(rng)


# ---------------------------------------------------------------------------------------------
# Running the entry points

# One intra-op thread per process: the runs are tiny, and several processes (or another test run
# on the same 2 cores) each spinning 2 OpenMP threads slow each other down many times over.
SCRIPT_ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def script_command(script: str, *args) -> list[str]:
    return [PYTHON, os.path.join(ROOT, script), *map(str, args)]


def run_script(script: str, *args, timeout: float = 120, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """Run train.py / eval.py from the repository root with this interpreter."""
    return subprocess.run(script_command(script, *args), cwd=cwd, env=SCRIPT_ENV, capture_output=True,
                          text=True, timeout=timeout)


def run_scripts(commands: list[list[str]], timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run several script_command(...) lists at once (2 cores: the imports overlap); results in order."""
    running = []
    for command in commands:
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        running.append((command, subprocess.Popen(command, cwd=ROOT, env=SCRIPT_ENV, stdout=out, stderr=err,
                                                  text=True), out, err))
    results = []
    deadline = time.time() + timeout
    try:
        for command, process, out, err in running:
            returncode = process.wait(timeout=max(deadline - time.time(), 1))
            out.seek(0)
            err.seek(0)
            results.append(subprocess.CompletedProcess(command, returncode, out.read(), err.read()))
    finally:
        for _, process, out, err in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
            err.close()
    return results


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]
