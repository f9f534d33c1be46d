"""train.py and eval.py on a generated ImageNet-LT-format dataset, as a user runs them: one epoch of
the ImageNet-LT recipe (shrunk to 16 px and ResNet-32), best.pt chosen on the validation list, the
shot-group table on the test list; and bad input stopping with one line from a DataLoader worker."""

from __future__ import annotations

import csv
import json
import os

import pytest

from conftest import ROOT, error_lines, run_scripts, script_command, tiny_config_dict, write_config
from engine.checkpoint import load_checkpoint
from tools import make_fake_imagenet_lt

# Every test uses the module's one-epoch train.py/eval.py runs on generated ImageNet-LT.
pytestmark = pytest.mark.slow

COUNTS = [105, 40, 21, 12, 5]         # many, medium, medium, few, few
RECIPE = os.path.join(ROOT, "configs/imagenet_lt/resnext50_ldam_drs_rsg.yaml")
SHRINK = ["data.num_classes=0", "data.image_size=16", "data.eval_resize=18", "data.batch_size=32",
          "data.eval_batch_size=64", "model.backbone=resnet32", "rsg.position=default", "rsg.num_centers=3",
          "rsg.contrastive_channels=8", "rsg.threshold_epoch=0", "data.resample_start=0", "optim.warmup_epochs=0",
          "train.epochs=1", "train.device=cpu", "train.progress=false"]


def make_fake(root):
    return make_fake_imagenet_lt.make_fake_dataset(str(root), COUNTS, val_per_class=3, test_per_class=6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three train.py runs at once: the shrunk recipe; the same with a corrupt validation image and 2
    workers (a missing one is found before training, engine/build.py); a digits run (a dataset
    without a validation split). name -> (output_dir, CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("large_scale")
    make_fake(tmp / "fake")
    make_fake(tmp / "broken")
    with open(tmp / "broken" / "ImageNet_LT_val.txt") as f:   # every listed image is evaluated
        missing = f.read().splitlines()[7].rsplit(" ", 1)[0]
    with open(tmp / "broken" / missing, "wb") as f:
        f.write(b"not an image")
    digits = write_config(tmp / "digits.yaml", tiny_config_dict(tmp / "digits", train={"epochs": 1}))
    commands = {
        "fake": ["--config", RECIPE, f"data.root={tmp / 'fake'}", "data.num_workers=0",
                 f"output_dir={tmp / 'fake_run'}"],
        "broken": ["--config", RECIPE, f"data.root={tmp / 'broken'}", "data.num_workers=2",
                   f"output_dir={tmp / 'broken_run'}"],
        "digits": ["--config", digits],
    }
    results = run_scripts([script_command("train.py", *args, *(SHRINK if name != "digits" else []))
                           for name, args in commands.items()])
    outputs = {"fake": tmp / "fake_run", "broken": tmp / "broken_run", "digits": tmp / "digits"}
    runs = {name: (str(outputs[name]), result) for name, result in zip(commands, results)}
    runs["missing"] = (os.path.join(str(tmp / "broken"), "ImageNet_LT_val.txt") + ":8", missing)
    return runs


@pytest.fixture(scope="module")
def evaluations(runs):
    fake_best = os.path.join(runs["fake"][0], "best.pt")
    commands = {
        "test": ["--checkpoint", fake_best, "--split", "test"],
        "val": ["--checkpoint", fake_best, "--split", "val"],
        "digits_val": ["--checkpoint", os.path.join(runs["digits"][0], "last.pt"), "--split", "val"],
    }
    results = run_scripts([script_command("eval.py", *args) for args in commands.values()])
    return dict(zip(commands, results))


def table(stdout: str) -> dict:
    lines = stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.split() == ["Many", "Medium", "Few", "All"])
    return dict(zip(["many", "medium", "few", "all"], map(float, lines[index + 1].split())))


def test_one_epoch_of_the_recipe_selects_on_val(runs, evaluations):
    output_dir, result = runs["fake"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with open(os.path.join(output_dir, "train.log")) as f:
        log = f.read()
    assert f"imagenet_lt: {sum(COUNTS)} training images in 5 classes ({', '.join(map(str, COUNTS))})" in log
    state = load_checkpoint(os.path.join(output_dir, "best.pt"))
    assert state["config"]["data"]["eval_split"] == "val" and state["class_counts"] == COUNTS
    # What train.py evaluated every epoch (and chose best.pt on) is the validation list.
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    evaluated = record["val"]          # metrics.jsonl names the evaluated split
    assert evaluated["top1"] == pytest.approx(table(evaluations["val"].stdout)["all"], abs=0.01)


def test_eval_prints_the_shot_group_table_and_writes_per_class_csv(runs, evaluations):
    result = evaluations["test"]
    assert result.returncode == 0, result.stderr
    assert "imagenet_lt, test split: 30 images, top-1 accuracy (%)" in result.stdout
    cells = table(result.stdout)
    assert all(0 <= value <= 100 for value in cells.values())
    with open(os.path.join(runs["fake"][0], "best.per_class.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["shot_group"] for row in rows] == ["many", "medium", "medium", "few", "few"]
    assert [int(row["train_count"]) for row in rows] == COUNTS and rows[0]["name"] == "n01440764"
    assert all(row["test_images"] == "6" for row in rows)
    per_class = [float(row["accuracy"]) for row in rows]
    assert cells["few"] == pytest.approx(sum(per_class[3:]) / 2, abs=0.01)

    val = evaluations["val"]
    assert val.returncode == 0, val.stderr
    assert "imagenet_lt, val split: 15 images" in val.stdout
    assert os.path.isfile(os.path.join(runs["fake"][0], "best.val.per_class.csv"))


def test_corrupt_image_in_a_worker_stops_with_one_line_after_saving_the_epoch(runs):
    output_dir, result = runs["broken"]
    where, corrupt = runs["missing"]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    last = error_lines(result.stderr)[-1]
    assert last.startswith(f"error: {where}: image file ") and f"{corrupt} cannot be read" in last
    assert load_checkpoint(os.path.join(output_dir, "last.pt"))["epoch"] == 1   # the training was saved first


def test_val_split_of_a_dataset_without_one_is_a_user_error(runs, evaluations):
    assert runs["digits"][1].returncode == 0, runs["digits"][1].stderr
    result = evaluations["digits_val"]
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: the val split was asked for, but data.name digits has only train "
                                          "and test splits; use the test split (data.eval_split=test, eval.py "
                                          "--split test)"]
