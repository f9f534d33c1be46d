"""train.py then eval.py as a user runs them, on a tiny CIFAR-10 folder and on the digits."""

from __future__ import annotations

import csv
import json
import os

import pytest

from conftest import (CIFAR_CLASSES, CIFAR_DATA, CIFAR_TEST_PER_CLASS, TINY_COUNTS, error_lines, run_scripts,
                      script_command, tiny_config_dict, write_config)
from engine.checkpoint import load_checkpoint
from engine.metrics import shot_group

# Every test uses the module's train.py and eval.py subprocess runs.
pytestmark = pytest.mark.slow

CSV_HEADER = ["class", "name", "train_count", "shot_group", "test_images", "accuracy"]
TABLE_HEADER = ["Many", "Medium", "Few", "All"]


RUNS = {
    # LDAM-DRW-RSG on the CIFAR-10 files: 40 .. 4 images per class at 32 px, RSG from epoch 1
    "cifar_rsg": dict(data=CIFAR_DATA),
    # the digits at 16 px without RSG: cross-entropy (linear head), no re-weighting. (LDAM-DRW-RSG
    # on the digits is trained in test_engine.py; a third subprocess here would cost ~7 s of CPU.)
    "digits_plain": dict(rsg={"enabled": False}, loss={"name": "ce", "reweight": "none"}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cifar_root):
    """train.py on the tiny configs (at once); name -> output_dir."""
    tmp = tmp_path_factory.mktemp("e2e")
    paths = {}
    for name, sections in RUNS.items():
        tree = tiny_config_dict(tmp / name, **sections)
        if tree["data"]["name"] == "cifar10":
            tree["data"]["root"] = tiny_cifar_root
        paths[name] = write_config(tmp / f"{name}.yaml", tree)
    results = run_scripts([script_command("train.py", "--config", path) for path in paths.values()])
    for name, result in zip(paths, results):
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr
    return {name: str(tmp / name) for name in RUNS}


@pytest.fixture(scope="module")
def evaluations(runs, tmp_path_factory):
    """eval.py on each run (at once), plus the two failing calls; name -> (arguments, CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("e2e_eval")
    commands = {
        "cifar_rsg": ["--checkpoint", os.path.join(runs["cifar_rsg"], "last.pt")],
        "digits_plain": ["--checkpoint", os.path.join(runs["digits_plain"], "best.pt"),
                         "--output", str(tmp / "plain.csv")],
        "other_backbone": ["--checkpoint", os.path.join(runs["cifar_rsg"], "last.pt"), "model.backbone=resnet56"],
        "missing": ["--checkpoint", str(tmp / "nowhere" / "last.pt")],
    }
    results = run_scripts([script_command("eval.py", *args) for args in commands.values()])
    return {name: (args, result) for (name, args), result in zip(commands.items(), results)}


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def parse_table(stdout: str) -> dict:
    """The Many / Medium / Few / All line of eval.py's table -> {name: float or None}."""
    lines = stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.split() == TABLE_HEADER)
    cells = lines[index + 1].split()
    assert len(cells) == 4, lines[index + 1]
    return {name: None if cell == "-" else float(cell) for name, cell in zip(TABLE_HEADER, cells)}


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def check_evaluation(run_dir, evaluation, test_per_class, class_names, expected_parameters):
    args, result = evaluation
    checkpoint = args[1]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    table = parse_table(result.stdout)
    csv_path = args[3] if "--output" in args else os.path.splitext(checkpoint)[0] + ".per_class.csv"
    assert f"per-class accuracy written to {csv_path}" in result.stdout
    assert f"{expected_parameters:,} parameters" in result.stdout

    header, rows = read_csv(csv_path)
    assert header == CSV_HEADER
    assert [int(row[0]) for row in rows] == list(range(10))
    assert [row[1] for row in rows] == class_names
    assert [int(row[2]) for row in rows] == TINY_COUNTS
    assert [row[3] for row in rows] == [shot_group(n) for n in TINY_COUNTS]
    assert [int(row[4]) for row in rows] == [test_per_class] * 10
    accuracies = [float(row[5]) for row in rows]
    assert all(0 <= a <= 100 for a in accuracies)

    # the table is computed from the per-class accuracies: group = mean over its classes
    groups = {"Medium": "medium", "Few": "few"}
    for column, group in groups.items():
        values = [a for a, row in zip(accuracies, rows) if row[3] == group]
        assert table[column] == pytest.approx(sum(values) / len(values), abs=0.006)
    assert table["Many"] is None                         # no class has more than 100 images
    assert table["All"] == pytest.approx(sum(accuracies) / 10, abs=0.006)  # balanced test set

    # the same numbers the training run logged for this checkpoint
    state = load_checkpoint(checkpoint)
    logged = read_metrics(run_dir)[state["epoch"] - 1]["test"]
    assert table["All"] == pytest.approx(logged["top1"], abs=0.006)
    assert table["Medium"] == pytest.approx(logged["medium"], abs=0.006)
    assert table["Few"] == pytest.approx(logged["few"], abs=0.006)
    return table


RESNET32_COSINE = 464_144          # backbone + cosine head (10 x 64), as evaluated (no RSG)
RESNET32_LINEAR = 464_154          # backbone + linear head (10 x 64 + 10)


def test_cifar_train_then_eval(runs, evaluations):
    run_dir = runs["cifar_rsg"]
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1]["train"]["generated_per_step"] > 0      # RSG generated from epoch 1
    state = load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert state["class_counts"] == TINY_COUNTS
    assert any(key.startswith("rsg.") for key in state["model"])
    check_evaluation(run_dir, evaluations["cifar_rsg"], CIFAR_TEST_PER_CLASS, CIFAR_CLASSES, RESNET32_COSINE)


def test_digits_run_without_rsg_train_then_eval(runs, evaluations):
    state = load_checkpoint(os.path.join(runs["digits_plain"], "last.pt"))
    assert not any(key.startswith("rsg.") for key in state["model"])
    records = read_metrics(runs["digits_plain"])
    assert [r["epoch"] for r in records] == [0, 1]
    # the model has no RSG, so it returns no RSG loss and the step logs none (only cls and the total)
    assert all(r["train"]["generated_per_step"] == 0 and "loss_cesc" not in r["train"] for r in records)
    assert all(r["train"]["loss_total"] == r["train"]["loss_cls"] for r in records)
    check_evaluation(runs["digits_plain"], evaluations["digits_plain"], 30, [str(c) for c in range(10)],
                     RESNET32_LINEAR)


def test_eval_with_other_backbone_fails_naming_checkpoint(evaluations):
    args, result = evaluations["other_backbone"]
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert args[1] in lines[0]                         # the checkpoint's path
    assert "resnet56" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_eval_missing_checkpoint_exits_2(evaluations):
    args, result = evaluations["missing"]
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and args[1] in lines[0]
    assert "Traceback" not in result.stderr
