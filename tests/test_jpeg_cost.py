"""scripts/jpeg_cost.py: the error matrix trained on / tested on PNG and JPEG, its paired
differences over seeds, and the crosswise evaluation of real runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import run_script, tiny_config_dict, write_config
from tools import jpeg_cost
from tools.jpeg_cost import SETTINGS, report, run_folder


def fake_run(folder, own_error: float, cross_error=None, epochs: int = 3) -> None:
    os.makedirs(folder)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump({"data": {"eval_split": "test"}, "train": {"epochs": epochs}}, f)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"epoch": epochs - 1, "test": {"top1": 100.0 - own_error}}) + "\n")
    if cross_error is not None:
        with open(os.path.join(folder, jpeg_cost.CROSS_REPORT), "w") as f:
            json.dump({"top1": 100.0 - cross_error}, f)


def test_the_differences_are_paired_by_seed_and_model(tmp_path):
    # (png/png, png/jpeg, jpeg/jpeg, jpeg/png) per seed, balanced
    errors = {0: (20.0, 21.0, 23.0, 22.5), 1: (22.0, 23.5, 24.0, 23.0)}
    for seed, (pp, pj, jj, jp) in errors.items():
        fake_run(run_folder(str(tmp_path), "png", "balanced", seed), pp, pj)
        fake_run(run_folder(str(tmp_path), "jpeg", "balanced", seed), jj, jp)
    fake_run(run_folder(str(tmp_path), "png", "balanced", 2), 20.0)          # not cross-evaluated yet
    lines = report(str(tmp_path), [0, 1, 2]).splitlines()
    assert "  seed 0: png/png 20.00, png/jpeg 21.00, jpeg/png 22.50, jpeg/jpeg 23.00" in lines
    assert "  not finished or not cross-evaluated: seed(s) 2" in lines
    text = "\n".join(lines)
    assert "test images, model trained on PNG: +1.25 ± 0.35, 95% t-interval" in text      # +1.0, +1.5
    assert "training images, tested on PNG: +1.75 ± 1.06" in text                         # +2.5, +1.0
    assert "both (JPEG/JPEG minus PNG/PNG): +2.50 ± 0.71" in text                          # +3.0, +2.0
    assert SETTINGS[1] + ": top-1 error" in text and "rho 10, w/o RSG" in text


def test_an_unfinished_run_counts_for_nothing(tmp_path):
    fake_run(run_folder(str(tmp_path), "png", "balanced", 0), 20.0, 21.0, epochs=5)
    os.remove(os.path.join(run_folder(str(tmp_path), "png", "balanced", 0), "metrics.jsonl"))
    assert jpeg_cost.own_error(run_folder(str(tmp_path), "png", "balanced", 0)) is None


@pytest.mark.slow
def test_crosswise_evaluation_of_real_runs(tmp_path):
    """Two tiny balanced runs, on PNG and on JPEG copies of the same images; --evaluate evaluates
    each on the other folder's test images, and the report has all four numbers."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 6)):
        for index, name in enumerate(("ant", "bee", "cat")):
            for kind in ("png", "jpeg"):
                os.makedirs(tmp_path / kind / split / name)
            for number in range(count):
                pixels = (rng.integers(0, 80, size=(16, 16, 3)) + 60 * index).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "png" / split / name / f"{number}.png")
                Image.fromarray(pixels).save(tmp_path / "jpeg" / split / name / f"{number}.jpg", quality=75)
    for kind in ("png", "jpeg"):
        data = {"name": "image_folder", "root": str(tmp_path / kind), "profile": "none", "max_per_class": 0,
                "image_size": 16, "crop_padding": 2, "batch_size": 16}
        tree = tiny_config_dict(run_folder(str(tmp_path / "out"), kind, "balanced", 0), data=data,
                                rsg={"enabled": False}, train={"epochs": 1})
        result = run_script("train.py", "--config", write_config(tmp_path / f"{kind}.yaml", tree), timeout=300)
        assert result.returncode == 0, result.stderr
    result = run_script("scripts/jpeg_cost.py", tmp_path / "out", "--seeds", "0", "--evaluate",
                        "--png-root", tmp_path / "png", "--jpeg-root", tmp_path / "jpeg", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "  seed 0: png/png" in result.stdout and "both (JPEG/JPEG minus PNG/PNG)" in result.stdout
    for kind in ("png", "jpeg"):
        assert os.path.isfile(os.path.join(run_folder(str(tmp_path / "out"), kind, "balanced", 0), "cross.report.json"))
