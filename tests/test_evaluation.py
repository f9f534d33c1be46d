"""eval.py's one evaluation path (docs/USAGE.md, "Evaluation"): the loader train.py uses (data.loader device too),
only the evaluated split built, and the JSON report beside the per-class CSV, agreeing with it and
with the printed table. Checkpoints: the old fixture (a trained digits model) and untrained models
saved as train.py saves them, so that no test trains."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil

import pytest
import torch
from test_old_checkpoint import OLD_CHECKPOINT

import eval as eval_entry
from conftest import CIFAR_DATA, TINY_COUNTS, tiny_config_dict
from core.errors import UserError
from data.builder import build_datasets
from engine import evaluation
from engine.checkpoint import CHECKPOINT_FORMAT, file_sha256, load_checkpoint, save_checkpoint
from engine.config import config_from_dict, config_to_dict, load_config
from models import build_model

GROUPS = ("many", "medium", "few", "top1")


def run_eval(capsys, *args) -> str:
    """eval.py's main in this process: exit 0, its stdout."""
    assert eval_entry.main([str(a) for a in args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def printed_table(stdout: str) -> dict:
    """The Many / Medium / Few / All cells of eval.py's table, as printed (text)."""
    lines = stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.split() == ["Many", "Medium", "Few", "All"])
    return dict(zip(GROUPS, lines[index + 1].split()))


def read_rows(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def untrained_checkpoint(path, cfg, counts) -> str:
    """A checkpoint in train.py's format of a freshly built model (eval.py reads nothing else)."""
    torch.manual_seed(0)
    model = build_model(cfg, counts, load_pretrained_weights=False)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": {}, "scaler": {},
                     "epoch": 1, "step": 0, "best_top1": -1.0, "best_epoch": -1, "config": config_to_dict(cfg),
                     "class_counts": list(counts), "code_version": "untrained"}, str(path))
    return str(path)


@pytest.fixture
def old_checkpoint(tmp_path) -> str:
    checkpoint = tmp_path / "last.pt"
    shutil.copy(OLD_CHECKPOINT, checkpoint)        # eval.py writes beside it: keep the fixture clean
    return str(checkpoint)


def test_the_json_report_holds_the_numbers_of_the_csv_and_the_printed_table(old_checkpoint, capsys):
    out = run_eval(capsys, "--checkpoint", old_checkpoint)
    report = read_json(old_checkpoint.replace(".pt", ".report.json"))
    rows = read_rows(old_checkpoint.replace(".pt", ".per_class.csv"))
    state = load_checkpoint(old_checkpoint)
    assert report["checkpoint"] == os.path.abspath(old_checkpoint) and report["sha256"] == file_sha256(old_checkpoint)
    assert (report["epoch"], report["config"], report["code_version"]) == (12, "quickstart", state["code_version"])
    assert report["split"] == "test" and report["images"] == 300 == sum(report["test_counts"])
    assert report["train_counts"] == state["class_counts"] == [int(row["train_count"]) for row in rows]
    assert report["test_counts"] == [int(row["test_images"]) for row in rows]
    assert [f"{a:.4f}" for a in report["per_class"]] == [row["accuracy"] for row in rows]
    assert "posthoc" not in report
    table = printed_table(out)
    assert {g: f"{report[g]:.2f}" for g in GROUPS} == table
    assert f"top-1 error {100 - report['top1']:.2f}%" in out
    assert f"report written to {old_checkpoint.replace('.pt', '.report.json')}" in out
    # full precision: the mean of the group's per-class accuracies, not of their rounded CSV values
    medium = [a for a, row in zip(report["per_class"], rows) if row["shot_group"] == "medium"]
    assert report["medium"] == pytest.approx(sum(medium) / len(medium), abs=1e-12)
    assert not glob.glob(os.path.join(os.path.dirname(old_checkpoint), "*.tmp*"))


@pytest.mark.slow
def test_the_json_report_carries_the_posthoc_choice(old_checkpoint, tmp_path, capsys):
    out = run_eval(capsys, "--checkpoint", old_checkpoint, "--output", tmp_path / "la.per_class.csv",
                   "eval.posthoc=logit_adjust", "eval.taus=[0.0,1.0]")
    report = read_json(tmp_path / "la.report.json")
    assert report["posthoc"]["kind"] == "logit_adjust" and report["posthoc"]["tau"] == 1.0
    assert report["top1"] == report["posthoc"]["by_tau"]["1"]["top1"]
    assert read_json(tmp_path / "la.posthoc.json")["by_tau"]["1"]["top1"] == report["top1"]
    assert printed_table(out)["top1"] == f"{report['top1']:.2f}" and "<-" in out


@pytest.mark.slow
def test_the_device_loader_evaluates_to_the_same_numbers(old_checkpoint, tmp_path, capsys, monkeypatch):
    built = []

    class CountedDeviceLoader(evaluation.DeviceLoader):
        def __init__(self, *args, **kwargs):
            built.append(kwargs["train"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(evaluation, "DeviceLoader", CountedDeviceLoader)
    standard = run_eval(capsys, "--checkpoint", old_checkpoint, "--output", tmp_path / "standard.per_class.csv")
    assert built == []
    device = run_eval(capsys, "--checkpoint", old_checkpoint, "--output", tmp_path / "device.per_class.csv",
                      "data.loader=device")
    assert built == [False]                        # the evaluation loader of train.py's data.loader=device
    reports = [read_json(tmp_path / f"{name}.report.json") for name in ("standard", "device")]
    for key in ("top1", "many", "medium", "few", "per_class", "test_counts"):
        assert reports[0][key] == pytest.approx(reports[1][key], abs=1e-9), key
    assert printed_table(standard) == printed_table(device)
    assert read_rows(tmp_path / "standard.per_class.csv") == read_rows(tmp_path / "device.per_class.csv")


@pytest.mark.slow
def test_a_cifar_checkpoint_evaluates_without_the_training_batches(tmp_path, tiny_cifar_root, capsys, monkeypatch):
    root = tmp_path / "cifar"
    shutil.copytree(tiny_cifar_root, root)
    for batch in glob.glob(str(root / "cifar-10-batches-py" / "data_batch_*")):
        os.remove(batch)
    cfg = config_from_dict(tiny_config_dict(tmp_path / "run", data=dict(CIFAR_DATA, root=str(root))))
    with pytest.raises(UserError):
        build_datasets(cfg.data)                   # training needs the batches that are gone
    checkpoint = untrained_checkpoint(tmp_path / "last.pt", cfg, TINY_COUNTS)
    monkeypatch.setattr("data.builder.build_datasets", None)      # never called on the way either
    out = run_eval(capsys, "--checkpoint", checkpoint)
    assert "cifar10, test split: 100 images" in out
    report = read_json(tmp_path / "last.report.json")
    assert report["test_counts"] == [10] * 10 and report["train_counts"] == TINY_COUNTS


@pytest.fixture
def listed_without_training_images(tmp_path):
    """An ImageNet-LT-format folder whose training images are deleted and whose training list ends
    in a malformed line, with data.num_classes set: the list is read only until every class is
    named, so evaluation works where training stops. Returns (checkpoint, the config)."""
    from test_large_scale_runs import COUNTS, RECIPE, SHRINK, make_fake

    written = make_fake(tmp_path / "data")
    with open(written["train"]) as f:
        listed = [line.rsplit(" ", 1)[0] for line in f.read().splitlines()]
    for relative in listed:
        os.remove(tmp_path / "data" / relative)
    with open(written["train"], "a") as f:
        f.write("a line that is no 'path label' entry\n")
    overrides = [o for o in SHRINK if not o.startswith("data.num_classes")]
    cfg = load_config(RECIPE, [*overrides, "data.num_classes=5", f"data.root={tmp_path / 'data'}",
                               "data.num_workers=0", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="expected 'relative/path.jpg <integer label>'"):
        build_datasets(cfg.data)
    return untrained_checkpoint(tmp_path / "run" / "best.pt", cfg, COUNTS), cfg


@pytest.mark.slow
def test_split_lists_evaluate_without_the_training_images(listed_without_training_images, capsys):
    checkpoint, _ = listed_without_training_images
    out = run_eval(capsys, "--checkpoint", checkpoint, "--split", "test")
    assert "imagenet_lt, test split: 30 images" in out
    val = run_eval(capsys, "--checkpoint", checkpoint, "--split", "val")
    assert "imagenet_lt, val split: 15 images" in val
    folder = os.path.dirname(checkpoint)
    assert read_json(os.path.join(folder, "best.report.json"))["split"] == "test"
    assert read_json(os.path.join(folder, "best.val.report.json"))["split"] == "val"
    rows = read_rows(os.path.join(folder, "best.per_class.csv"))
    assert rows[0]["name"] == "n01440764"          # class names still from the training list


def test_the_per_epoch_loader_and_eval_py_share_one_builder(old_checkpoint):
    """train.py's build_loaders takes its evaluation loader from engine.evaluation.build_eval_loader."""
    from data.samplers import ShardSampler
    from engine.distributed import DistributedContext
    from engine.build import build_loaders

    state = load_checkpoint(old_checkpoint)
    cfg = config_from_dict(state["config"])
    dataset = evaluation.build_eval_dataset(cfg.data)
    _, test_loader, _, _ = build_loaders(cfg, dataset, dataset, torch.device("cpu"), DistributedContext(1, 2))
    alone = evaluation.build_eval_loader(cfg, dataset, torch.device("cpu"), DistributedContext(1, 2))
    assert isinstance(test_loader.sampler, ShardSampler) and list(test_loader.sampler) == list(alone.sampler)
    assert list(test_loader.sampler) == list(range(1, len(dataset), 2))
    assert test_loader.batch_size == alone.batch_size == cfg.data.eval_batch_size
