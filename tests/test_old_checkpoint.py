"""A checkpoint written by an earlier version of the code still loads and evaluates to its numbers.

The fixture was made by main at aa3a899 (before the run-folder, baseline and layering changes):
the quick start shortened to 12 epochs (RSG generating from epoch 8, contrastive width 16), its
last.pt, and the per-class CSV that aa3a899's eval.py wrote for it. Whatever the engine becomes,
a user's old checkpoint must keep its predictions.
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest

import eval as eval_entry

# Its one test evaluates a stored checkpoint through eval.py (about 2 s).
pytestmark = pytest.mark.slow

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
OLD_CHECKPOINT = os.path.join(FIXTURES, "aa3a899_digits_last.pt")
OLD_CSV = os.path.join(FIXTURES, "aa3a899_digits_last.per_class.csv")


def per_class_accuracy(path: str) -> dict:
    with open(path, newline="") as f:
        return {row["class"]: (int(row["test_images"]), row["accuracy"]) for row in csv.DictReader(f)}


def test_old_checkpoint_evaluates_to_its_recorded_per_class_accuracy(tmp_path):
    checkpoint = tmp_path / "last.pt"
    shutil.copy(OLD_CHECKPOINT, checkpoint)        # eval.py writes beside it: keep the fixture clean
    output = tmp_path / "per_class.csv"
    assert eval_entry.main(["--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    recorded = per_class_accuracy(OLD_CSV)
    assert per_class_accuracy(str(output)) == recorded
    assert any(accuracy not in ("0.0000", "100.0000") for _, accuracy in recorded.values())  # not degenerate


def test_old_checkpoint_resumes_and_keeps_its_fields(tmp_path):
    """Resume loads the old file's model, optimizer and scaler states by their keys (strict), trains
    one more epoch, and writes every field the old file had."""
    from conftest import torch_globals_restored
    from engine.checkpoint import load_checkpoint
    from engine.config import config_from_dict
    from engine.run import fit

    old = load_checkpoint(OLD_CHECKPOINT)
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(OLD_CHECKPOINT, folder / "last.pt")
    cfg = config_from_dict(old["config"], [f"output_dir={folder}", f"train.epochs={old['epoch'] + 1}"])
    with torch_globals_restored():
        fit(cfg, resume="auto")
    resumed = load_checkpoint(str(folder / "last.pt"))
    assert resumed["epoch"] == old["epoch"] + 1
    assert set(old) <= set(resumed) and set(old["model"]) == set(resumed["model"])
    assert set(old["optimizer"]["state"]) == set(resumed["optimizer"]["state"])
