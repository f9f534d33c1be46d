"""A run folder is the user's results: one owner, a lock, nothing written before the run is built,
every failure one line in the terminal and in train.log (docs/USAGE.md, "Run folders")."""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import signal
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import engine.build as engine_build
from conftest import (PYTHON, ROOT, SCRIPT_ENV, TINY_STEPS_PER_EPOCH, error_lines, read_jsonl, run_script, run_scripts,
                      script_command, snapshot, tiny_config_dict, write_config)
from core.errors import UserError
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.run import fit
from engine.run_folder import LOCK_NAME, RunFolderLock
from losses import build_loss


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch train.py run (RSG from epoch 1): (config path, output_dir, stderr)."""
    tmp = tmp_path_factory.mktemp("owned")
    path = write_config(tmp / "owner.yaml", tiny_config_dict(tmp / "run"))
    result = run_script("train.py", "--config", path, timeout=300)
    assert result.returncode == 0, result.stderr
    return path, tmp / "run", result.stderr


# ---------------------------------------------------------------------------------------------
# Item 1: one owner per run folder


@pytest.mark.slow
def test_a_fresh_run_into_a_used_folder_stops_and_changes_nothing(finished_run, tmp_path):
    path, folder, _ = finished_run
    before = snapshot(folder)
    other = write_config(tmp_path / "other.yaml", tiny_config_dict(folder, optim={"lr": 0.01}))
    results = run_scripts([script_command("train.py", "--config", path),              # the same config
                           script_command("train.py", "--config", other, "train.progress=true")], timeout=300)
    for result in results:
        assert result.returncode == 2, result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: output_dir "), result.stderr
        for words in ("config owner", "last finished epoch 1", "--resume auto", "output_dir=", "--overwrite"):
            assert words in lines[0]
    assert snapshot(folder) == before                   # byte-identical, no new event file either


CHECK_LOCK = ("import sys, time; from engine.run_folder import RunFolderLock; "
              "lock = RunFolderLock(sys.argv[2]); lock.check_free(); print('held', flush=True); time.sleep(600)")


@pytest.mark.slow
def test_a_fresh_run_into_a_used_folder_is_told_what_it_holds_while_another_attempt_checks_it(finished_run):
    """Another train.py checking the same folder holds its lock for that moment (and the lock file
    still names the finished run's PID): the refusal is still what the folder holds, not "in use"."""
    path, folder, _ = finished_run
    before = snapshot(folder)
    checker = start_lock_holder(folder, CHECK_LOCK)
    try:
        fresh, resumed = run_scripts([script_command("train.py", "--config", path),
                                      script_command("train.py", "--config", path, "--resume", "auto")], timeout=300)
    finally:
        checker.kill()
        checker.wait()
    assert fresh.returncode == 2, fresh.stderr
    lines = error_lines(fresh.stderr)
    assert len(lines) == 1 and "holds a run already" in lines[0] and "last finished epoch 1" in lines[0], fresh.stderr
    # a resume does meet the held lock: it names no PID, since the one in the lock file has ended
    assert resumed.returncode == 2, resumed.stderr
    lines = error_lines(resumed.stderr)
    assert len(lines) == 1 and "in use by another train.py checking or starting in it" in lines[0], resumed.stderr
    assert "PID" not in lines[0]
    assert snapshot(folder) == before


@pytest.mark.slow
def test_overwrite_replaces_the_old_run_and_resume_auto_continues_it(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 1}))
    first = run_script("train.py", "--config", path, timeout=300)
    assert first.returncode == 0, first.stderr
    (tmp_path / "run" / "last.per_class.csv").write_text(      # eval.py's, of the old last.pt
        ",".join(("class", "name", "train_count", "shot_group", "test_images", "accuracy")) + "\n0,a,5,many,3,66.7\n")
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    again = run_script("train.py", "--config", path, "--overwrite", "optim.lr=0.02", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "--overwrite: removed the previous run's" in again.stderr
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0]
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["lr"] == pytest.approx(0.02)
    assert len(glob.glob(str(tmp_path / "run" / "tensorboard" / "events.out.tfevents.*"))) == 1
    assert not (tmp_path / "run" / "last.per_class.csv").exists()     # it described the old checkpoint
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine\n"   # not a run file: kept
    both = run_script("train.py", "--config", path, "--overwrite", "--resume", "auto")
    assert both.returncode == 2 and "give one of them" in both.stderr


@pytest.mark.slow
def test_resume_auto_on_a_finished_run_says_so_and_writes_nothing(finished_run):
    path, folder, _ = finished_run
    before = snapshot(folder)
    result = run_script("train.py", "--config", path, "--resume", "auto")
    assert result.returncode == 0, result.stderr
    assert "is finished: 2 of 2 epochs trained, nothing to do" in result.stderr
    assert "epochs 2..1" not in result.stderr
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------
# Item 2: the lock, with real processes

HOLD_LOCK = ("import sys, time; from engine.run_folder import RunFolderLock; "
             "lock = RunFolderLock(sys.argv[2]); lock.acquire(); print('held', flush=True); time.sleep(600)")


def start_lock_holder(folder, code=HOLD_LOCK):
    """A process that holds the folder's lock (as a run does, or with CHECK_LOCK as a checking
    train.py does) until killed."""
    holder = subprocess.Popen([PYTHON, "-c", code, ROOT, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=SCRIPT_ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow
def test_a_second_run_in_a_held_folder_is_refused_with_the_holders_pid(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 1}))
    holder = start_lock_holder(tmp_path / "run")
    try:
        results = run_scripts([script_command("train.py", "--config", path),
                               script_command("train.py", "--config", path, "--resume", "auto")])
        for result in results:
            assert result.returncode == 2, result.stderr
            lines = error_lines(result.stderr)
            assert len(lines) == 1 and f"in use by another run (PID {holder.pid})" in lines[0], result.stderr
        assert os.listdir(tmp_path / "run") == [LOCK_NAME]       # nothing else was written
    finally:
        holder.kill()          # SIGKILL: the OS releases the flock, whatever the process was doing
        holder.wait()
    result = run_script("train.py", "--config", path, "--resume", "auto", timeout=300)
    assert result.returncode == 0, result.stderr      # a killed run never blocks its own resume
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["epoch"] == 1


@pytest.mark.slow
def test_two_runs_started_at_once_one_trains_the_other_is_refused(tmp_path):
    tree = tiny_config_dict(tmp_path / "run", train={"epochs": 1})
    paths = [write_config(tmp_path / f"c{i}.yaml", dict(tree, optim=dict(tree["optim"], lr=lr)))
             for i, lr in enumerate((0.05, 0.01))]
    results = run_scripts([script_command("train.py", "--config", p, "--resume", "auto") for p in paths],
                          timeout=300)
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [r.stderr for r in results]
    refused = next(r for r in results if r.returncode == 2)
    assert re.search(r"in use by another (run \(PID \d+\)|train.py checking or starting in it)|written by another run "
                     r"while this one", refused.stderr)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0]          # never interleaved


def test_the_lock_refuses_a_second_holder_in_process(tmp_path):
    first, second = RunFolderLock(str(tmp_path)), RunFolderLock(str(tmp_path))
    first.acquire()
    with pytest.raises(UserError, match=f"PID {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


# ---------------------------------------------------------------------------------------------
# Item 3: nothing written before the run is built and checked


@pytest.mark.slow
def test_a_launch_that_fails_before_training_leaves_the_run_as_it_was(finished_run, tmp_path):
    path, folder, _ = finished_run
    before = snapshot(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("train.py", "--config", path, "--resume", "auto", "train.epochs=3", "data.name=cifar10",
                        f"data.root={empty}")
    assert result.returncode == 2 and len(error_lines(result.stderr)) <= 3, result.stderr
    assert error_lines(result.stderr)[-1].startswith("error: ")
    assert snapshot(folder) == before                   # config.yaml and train.log included
    fresh = run_script("train.py", "--config", path, f"output_dir={tmp_path / 'new'}", "data.name=cifar10",
                       f"data.root={empty}")
    assert fresh.returncode == 2
    assert not (tmp_path / "new").exists()              # not even the folder


# ---------------------------------------------------------------------------------------------
# Items 4 and 5: evaluation-set checks (eval.py, and before the first training step)


def write_split_list(root, classes=3, train_per_class=12, test_per_class=4, size=16):
    """root/images/*.png with train.txt and test.txt ('path label' lines)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        lines = []
        for label in range(classes):
            for index in range(per_class):
                name = f"images/{split}_{label}_{index}.png"
                pixels = rng.integers(0, 60, (size, size, 3)) + 60 * label
                Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, name))
                lines.append(f"{name} {label}")
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(root)


def split_list_config(tmp_path, root, name="lists", **sections):
    data = {"name": "split_list", "root": root, "train_list": "train.txt", "test_list": "test.txt",
            "profile": "none", "transform": "pad_crop_flip", "batch_size": 8, "decoder": "pil"}
    sections = {"train": {"epochs": 1}, "rsg": {"enabled": False}, "loss": {"name": "ce", "reweight": "none"},
                **sections}
    tree = tiny_config_dict(tmp_path / name, data=data, **sections)
    return write_config(tmp_path / f"{name}.yaml", tree)


@pytest.mark.slow
def test_eval_refuses_a_dataset_with_other_classes_in_one_line_without_a_csv(finished_run, tmp_path):
    _, folder, _ = finished_run
    root = write_split_list(tmp_path / "three")
    output = tmp_path / "out.csv"
    result = run_script("eval.py", "--checkpoint", folder / "last.pt", "--output", output, "data.name=split_list",
                        f"data.root={root}", "data.train_list=train.txt", "data.test_list=test.txt",
                        "data.profile=none")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "trained on 10 classes" in lines[0] and "has 3" in lines[0], result.stderr
    assert not output.exists()


def test_the_per_class_csv_is_written_atomically(tmp_path):
    from engine.evaluation import EvaluationReport, write_per_class_csv

    path = tmp_path / "x.csv"
    path.write_text("previous\n")
    report = EvaluationReport("test", 60.0, None, 60.0, None, [50.0, 60.0, 70.0], [1, 1, 1], [30, 20, 10])
    with pytest.raises(IndexError):            # the third class name is missing: a failure mid-write
        write_per_class_csv(str(path), report, ["a", "b"])
    assert path.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["x.csv"]


@pytest.mark.slow
def test_a_missing_evaluation_image_stops_the_run_before_it_trains(tmp_path):
    root = write_split_list(tmp_path / "data")
    os.remove(os.path.join(root, "images", "test_2_3.png"))
    path = split_list_config(tmp_path, root)
    result = run_script("train.py", "--config", path)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert "test_2_3.png" in lines[-1] and "1 of 12 image files are missing" in lines[-1], result.stderr
    assert "epoch" not in result.stderr.replace("evaluation", "")
    assert not (tmp_path / "lists").exists()


@pytest.mark.slow
def test_a_corrupt_evaluation_image_costs_no_training(tmp_path, restore_torch_globals):
    root = write_split_list(tmp_path / "data")
    broken = os.path.join(root, "images", "test_1_0.png")
    good = open(broken, "rb").read()
    with open(broken, "wb") as f:
        f.write(b"not a png")
    cfg = load_config(split_list_config(tmp_path, root, train={"epochs": 2}))
    with pytest.raises(UserError, match="test_1_0.png"):
        fit(cfg)
    state = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    assert (state["epoch"], state["step"]) == (1, 0)        # epoch 0 was saved before its evaluation
    assert not os.path.exists(os.path.join(cfg.output_dir, "metrics.jsonl"))
    with open(os.path.join(cfg.output_dir, "train.log")) as f:
        assert "error: " in f.read().splitlines()[-1]       # item 7: the error is in train.log
    with open(broken, "wb") as f:
        f.write(good)
    fit(cfg, resume="auto")
    records = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1]          # epoch 0 evaluated on resume, then epoch 1
    assert all(r["test"]["top1"] >= 0 for r in records)
    assert records[0]["train"] == state["record"]["train"]


# ---------------------------------------------------------------------------------------------
# Items 7 and 8: every ending in train.log; one-line messages


class LossHook(torch.nn.Module):
    def __init__(self, inner, before_call):
        super().__init__()
        self.inner, self.before_call, self.calls = inner, before_call, 0

    def forward(self, logits, targets, class_weights=None):
        self.calls += 1
        return self.before_call(self.calls, self.inner(logits, targets, class_weights))


def patch_loss(monkeypatch, before_call):
    monkeypatch.setattr(engine_build, "build_loss", lambda cfg, counts: LossHook(build_loss(cfg, counts), before_call))


def last_log_line(cfg) -> str:
    with open(os.path.join(cfg.output_dir, "train.log")) as f:
        return f.read().rstrip("\n").splitlines()[-1]


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                               restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 2})))
    last = os.path.join(cfg.output_dir, "last.pt")
    real_save, calls = torch.save, []

    def fills_the_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if obj.get("epoch") == 2:              # epoch 1's checkpoint: the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(UserError) as info:
        fit(cfg)
    message = str(info.value)
    assert "\n" not in message and last in message and "No space left on device" in message
    assert "previous last.pt is intact" in message
    assert load_checkpoint(last)["epoch"] == 1
    assert not glob.glob(os.path.join(cfg.output_dir, "*.tmp*"))
    assert last_log_line(cfg).endswith(message)


@pytest.mark.slow
def test_an_unwritable_output_dir_is_one_line_naming_it(tmp_path):
    (tmp_path / "a_file").write_text("")
    output = tmp_path / "a_file" / "run"
    path = write_config(tmp_path / "c.yaml", tiny_config_dict(output, train={"epochs": 1}))
    result = run_script("train.py", "--config", path)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert lines[-1].startswith(f"error: cannot write into output_dir {output}") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_non_finite_loss_names_only_a_checkpoint_that_exists(tmp_path, monkeypatch, restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run")))
    patch_loss(monkeypatch, lambda call, loss: loss * float("nan") if call == 2 else loss)
    with pytest.raises(UserError) as info:
        fit(cfg)
    assert "no checkpoint was saved yet" in str(info.value) and "last.pt" not in str(info.value)
    assert last_log_line(cfg).endswith(str(info.value))


@pytest.mark.slow
def test_a_second_interrupt_stops_at_once_without_a_traceback(tmp_path, monkeypatch, restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 3})))

    def interrupt_twice(call, loss):
        if call == TINY_STEPS_PER_EPOCH + 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    patch_loss(monkeypatch, interrupt_twice)
    with pytest.raises(SystemExit) as info:
        fit(cfg)
    assert info.value.code == 130
    line = last_log_line(cfg)
    assert "second interrupt" in line and os.path.join(cfg.output_dir, "last.pt") in line
    assert load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))["epoch"] == 1


@pytest.mark.slow
def test_a_signal_and_an_unexpected_error_reach_train_log(tmp_path, monkeypatch, restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 2})))

    def fails(call, loss):
        if call == 2:
            raise ZeroDivisionError("a bug")
        return loss

    patch_loss(monkeypatch, fails)
    with pytest.raises(ZeroDivisionError):
        fit(cfg)
    with open(os.path.join(cfg.output_dir, "train.log")) as f:
        text = f.read()
    assert "the run ended with ZeroDivisionError: a bug" in text and "Traceback" in text

    def stops(call, loss):
        if call == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    patch_loss(monkeypatch, stops)
    with pytest.raises(SystemExit):
        fit(cfg, overwrite=True)
    assert "stopped by signal 15" in last_log_line(cfg)


@pytest.mark.slow
def test_a_checkpoint_of_another_model_gives_a_short_message(finished_run):
    _, folder, _ = finished_run
    result = run_script("eval.py", "--checkpoint", folder / "last.pt", "model.backbone=resnet56")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert len(lines[0]) < 600 and "missing from the checkpoint" in lines[0] and "..." in lines[0]


# ---------------------------------------------------------------------------------------------
# Item 9: config checks


def test_yaml_errors_give_the_line_and_a_missing_base_names_its_includer(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  seed: [1, 2\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML: line \d+, column \d+"):
        load_config(str(bad))
    child = tmp_path / "child.yaml"
    child.write_text("_base_: [nowhere.yaml]\n")
    with pytest.raises(UserError, match=r"nowhere.yaml \(the _base_ of .*child.yaml"):
        load_config(str(child))


@pytest.mark.slow
def test_a_threshold_epoch_past_the_run_is_warned_about(finished_run, tmp_path):
    path, _, _ = finished_run
    result = run_script("train.py", "--config", path, f"output_dir={tmp_path / 'r'}", "train.epochs=1",
                        "rsg.threshold_epoch=5")
    assert result.returncode == 0, result.stderr
    assert "RSG will never generate" in result.stderr
    assert "RSG will never generate" in (tmp_path / "r" / "train.log").read_text()
    # a run that ends exactly at T_th is a first stage to branch from (rsg_pair.py's shared stage): no warning
    result = run_script("train.py", "--config", path, f"output_dir={tmp_path / 's'}", "train.epochs=1",
                        "rsg.threshold_epoch=1")
    assert result.returncode == 0 and "never generate" not in result.stderr
    assert "a first stage" in result.stderr and (tmp_path / "s" / "threshold.pt").is_file()


# ---------------------------------------------------------------------------------------------
# Item 10: log lines that say what they show


@pytest.mark.slow
def test_the_logged_loss_is_the_sum_of_its_weighted_terms(finished_run):
    _, _, stderr = finished_run
    lines = [line for line in stderr.splitlines() if " loss " in line]
    assert len(lines) == 2
    for line in lines:
        found = re.search(r"loss ([\d.]+) = cls ([\d.]+) \+ ([\d.]+)\*cesc ([\d.]+) \+ ([\d.]+)\*mv ([\d.]+)", line)
        total, cls, l1, cesc, l2, mv = map(float, found.groups())
        assert (l1, l2) == (0.1, 0.01)
        assert total == pytest.approx(cls + l1 * cesc + l2 * mv, abs=0.01)


@pytest.mark.slow
def test_summary_lines_have_no_empty_timestamp_line(finished_run):
    _, _, stderr = finished_run
    assert not [line for line in stderr.splitlines() if re.fullmatch(r"\d\d:\d\d:\d\d ?", line)]
    assert re.search(r"\d\d:\d\d:\d\d test accuracy \(%\) after epoch 1", stderr)


@pytest.mark.slow
def test_a_resumed_partial_epoch_is_marked_partial(tmp_path, monkeypatch, restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 2})))
    patch_loss(monkeypatch, lambda call, loss: (os.kill(os.getpid(), signal.SIGTERM), loss)[1] if call == 2 else loss)
    with pytest.raises(SystemExit):
        fit(cfg)
    monkeypatch.setattr(engine_build, "build_loss", build_loss)
    fit(cfg, resume="auto")
    records = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))
    assert records[0]["partial"] == {"from_step": 2, "steps": TINY_STEPS_PER_EPOCH}
    assert "partial" not in records[1]
    assert "(steps 2..3 only: resumed mid-epoch)" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_eval_says_1_epoch(finished_run, tmp_path):
    path, _, _ = finished_run
    output = tmp_path / "one"
    assert run_script("train.py", "--config", path, f"output_dir={output}", "train.epochs=1").returncode == 0
    result = run_script("eval.py", "--checkpoint", output / "last.pt", "--output", tmp_path / "x.csv")
    assert result.returncode == 0, result.stderr
    assert "(after 1 epoch," in result.stdout


def test_metrics_name_the_evaluated_split_and_readers_take_both(tmp_path, restore_torch_globals):
    root = write_split_list(tmp_path / "data")
    os.rename(os.path.join(root, "test.txt"), os.path.join(root, "val.txt"))
    cfg = load_config(split_list_config(tmp_path, root), ["data.test_list=", "data.val_list=val.txt",
                                                          "data.eval_split=val"])
    fit(cfg)
    record = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))[0]
    assert "val" in record and "test" not in record
    from tools import collect_results

    assert collect_results.evaluations(collect_results.read_run(cfg.output_dir)) == [record["val"]]
    old = dict(record)                     # a line as written before: the val figures under "test"
    old["test"] = old.pop("val")
    with open(os.path.join(cfg.output_dir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(old) + "\n")
    assert collect_results.evaluations(collect_results.read_run(cfg.output_dir)) == [record["val"]]


def test_resume_auto_refuses_metrics_without_a_checkpoint(tmp_path):
    from engine.run_folder import check_ownership

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    with pytest.raises(UserError, match="goes to epoch 1, but no last.pt"):
        check_ownership(str(tmp_path), "auto", False)
    check_ownership(str(tmp_path), None, True)                  # --overwrite may replace it
    check_ownership(str(tmp_path / "absent"), None, False)      # a new folder is free
    with pytest.raises(UserError, match="is a checkpoint of the run in .*elsewhere, not of output_dir"):
        check_ownership(str(tmp_path), str(tmp_path / "elsewhere" / "last.pt"), False)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 10 MB tmpfs (room for two checkpoints of the tiny model, not three), when this machine
    lets the tests mount one."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)   # lazy: a child may still hold a file


@pytest.mark.slow
def test_a_really_full_disk_keeps_the_last_checkpoint(small_tmpfs, tmp_path, restore_torch_globals):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(small_tmpfs / "run", train={"epochs": 3})))
    last = os.path.join(cfg.output_dir, "last.pt")
    with pytest.raises(UserError) as info:
        fit(cfg)
    message = str(info.value)
    written = re.search(r"cannot write the checkpoint (\S+):", message)   # last.pt, best.pt or threshold.pt
    assert "\n" not in message and "No space left on device" in message and written, message
    assert os.path.dirname(written.group(1)) == cfg.output_dir
    state = load_checkpoint(last)                 # torch's own writer failed: the old file is whole
    assert state["epoch"] >= 1 and state["step"] == 0
    assert not glob.glob(os.path.join(cfg.output_dir, "*.tmp*"))
    assert last_log_line(cfg).endswith(message)
