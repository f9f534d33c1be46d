"""The training engine: checkpoints, resume, stop on a signal, non-finite losses, run outputs."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from torch import nn

import engine.build as engine_build
from conftest import (ROOT, SCRIPT_ENV, TINY_COUNTS, TINY_STEPS_PER_EPOCH, read_jsonl, run_script, script_command,
                      tiny_config_dict, torch_globals_restored, write_config)
from core.errors import UserError
from core.seeds import SAMPLER_STREAM, epoch_seed
from data.imbalance import imbalanced_counts
from engine.checkpoint import (CHECKPOINT_FORMAT, find_resume_checkpoint, load_checkpoint, load_model_weights,
                               save_checkpoint)
from engine.config import config_from_dict, config_to_dict, load_config
from engine.run import fit
from losses import build_loss

# ---------------------------------------------------------------------------------------------
# Checkpoint files


def test_save_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "sub" / "ck.pt")
    state = {"format": CHECKPOINT_FORMAT, "model": {"w": torch.arange(4.0)}, "epoch": 3}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert os.listdir(tmp_path / "sub") == ["ck.pt"]


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {"w": torch.ones(3)}, "epoch": 1}, path)
    with open(path, "rb") as f:
        before = f.read()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"\x80\x02partial checkpoint bytes")
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError, match="disk full; the previous last.pt is intact"):
        save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    with open(path, "rb") as f:
        assert f.read() == before
    assert os.listdir(tmp_path) == ["last.pt"]            # no temporary file left behind
    assert load_checkpoint(path)["epoch"] == 1


def test_load_checkpoint_garbage_names_the_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(UserError) as info:
        load_checkpoint(str(path))
    assert str(path) in str(info.value)
    assert "cannot read checkpoint" in str(info.value)


@pytest.mark.parametrize("mmap", [False, True])
def test_an_empty_checkpoint_is_called_empty(tmp_path, mmap):
    """torch's own text for a 0-byte file is a hint about torch.save's zip format, cut mid-word."""
    path = tmp_path / "best.pt"
    path.write_bytes(b"")
    with pytest.raises(UserError) as info:
        load_checkpoint(str(path), mmap=mmap)
    assert str(info.value) == f"cannot read checkpoint {path}: the file is empty (0 bytes)"


def test_load_checkpoint_truncated_file(tmp_path):
    path = str(tmp_path / "ck.pt")
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {"w": torch.randn(1000)}}, path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError, match="ck.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("command", ["eval", "branch", pytest.param("stage", marks=pytest.mark.slow)])
def test_an_unknown_key_in_a_checkpoints_config_names_the_file(tmp_path, make_tiny_config, command, capsys):
    """A checkpoint of another version of the code: its config's key, and which file holds it."""
    import eval as eval_script
    import train as train_script

    path = str(tmp_path / "other_version.pt")
    stored = config_to_dict(load_config(make_tiny_config()))
    stored["rsg"]["bogus"] = 1
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": {}, "config": stored, "epoch": 1,
                     "class_counts": TINY_COUNTS}, path)
    if command == "eval":
        status = eval_script.main(["--checkpoint", path])
    elif command == "branch":
        status = train_script.main(["--config", make_tiny_config("branch"), "--branch-from", path])
    else:
        status = train_script.main(["--config", make_tiny_config("stage"), "rsg.enabled=false", "stage.name=lws",
                                    f"stage.parent={path}"])
    assert status == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {path}: key 'rsg.bogus' is unknown")


def test_load_checkpoint_foreign_and_missing(tmp_path):
    foreign = str(tmp_path / "foreign.pt")
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="foreign.pt is not a checkpoint"):
        load_checkpoint(foreign)
    torch.save([1, 2, 3], foreign)
    with pytest.raises(UserError, match="foreign.pt is not a checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match="checkpoint not found: .*absent.pt"):
        load_checkpoint(str(tmp_path / "absent.pt"))


def test_load_model_weights_mismatch_is_one_line_user_error():
    model = nn.Linear(3, 2)
    with pytest.raises(UserError) as info:
        load_model_weights(model, {"weight": torch.zeros(2, 3)}, "runs/x/last.pt", "backbone y")
    message = str(info.value)
    assert "runs/x/last.pt" in message and "backbone y" in message and "bias" in message
    assert "\n" not in message


def test_find_resume_checkpoint(tmp_path):
    assert find_resume_checkpoint(None, str(tmp_path)) is None
    assert find_resume_checkpoint("auto", str(tmp_path)) is None
    (tmp_path / "last.pt").write_bytes(b"x")
    assert find_resume_checkpoint("auto", str(tmp_path)) == str(tmp_path / "last.pt")
    with pytest.raises(UserError, match="--resume"):
        find_resume_checkpoint(str(tmp_path / "other.pt"), str(tmp_path))


def test_epoch_seed_keeps_the_values_drawn_before_and_is_distinct_per_epoch_and_seed():
    # the values of the two formulas this function replaced: every earlier run repeats
    assert epoch_seed(7, 3) == 7 * 1_000_003 + 4 and epoch_seed(7, 3, SAMPLER_STREAM) == 7 * 100_003 + 3
    assert epoch_seed(7, 3, stream=2) == epoch_seed(7, 3) + 2
    for stream in (0, SAMPLER_STREAM):
        seeds = {epoch_seed(seed, epoch, stream) for seed in range(3) for epoch in range(200)}
        assert len(seeds) == 600
    with pytest.raises(ValueError):
        epoch_seed(0, 0, -2)


# ---------------------------------------------------------------------------------------------
# Resume equivalence (and the outputs of a run)

RESUME_SECTIONS = dict(
    train={"epochs": 4, "deterministic": True},
    rsg={"threshold_epoch": 3},
    loss={"reweight_start": 3},
    optim={"lr": 0.05, "warmup_epochs": 1, "milestones": [2, 3], "decay": 0.1},
)


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    """A 4-epoch run, and the same run as 2 epochs then `--resume auto` to 4 (RSG and DRW from
    epoch 3, lr milestones at 2 and 3), deterministic on the CPU."""
    tmp = tmp_path_factory.mktemp("resume")
    full_path = write_config(tmp / "full.yaml", tiny_config_dict(tmp / "full", **RESUME_SECTIONS))
    split_path = write_config(tmp / "split.yaml", tiny_config_dict(tmp / "split", **RESUME_SECTIONS))
    with torch_globals_restored():
        full_cfg = load_config(full_path)
        full_report = fit(full_cfg)
        fit(load_config(split_path, ["train.epochs=2"]))
        first_half = load_checkpoint(str(tmp / "split" / "last.pt"))
        split_cfg = load_config(split_path)
        split_report = fit(split_cfg, resume="auto")
    return {"full": str(tmp / "full"), "split": str(tmp / "split"), "full_cfg": full_cfg,
            "split_cfg": split_cfg, "full_report": full_report, "split_report": split_report,
            "first_half": first_half}


@pytest.mark.slow
def test_resume_gives_identical_weights(resumed_runs):
    full = load_checkpoint(os.path.join(resumed_runs["full"], "last.pt"))
    split = load_checkpoint(os.path.join(resumed_runs["split"], "last.pt"))
    assert resumed_runs["first_half"]["epoch"] == 2 and resumed_runs["first_half"]["step"] == 0
    assert full["epoch"] == split["epoch"] == 4 and full["step"] == split["step"] == 0
    assert set(full["model"]) == set(split["model"])
    assert any(key.startswith("rsg.") for key in full["model"])
    different = [key for key in full["model"] if not torch.equal(full["model"][key], split["model"][key])]
    assert different == []
    # the weights did move during the second half
    moved = [key for key, value in resumed_runs["first_half"]["model"].items()
             if value.is_floating_point() and not torch.equal(value, full["model"][key])]
    assert len(moved) > 10
    # the optimizer's momentum buffers match as well
    for key, value in full["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], split["optimizer"]["state"][key]["momentum_buffer"])


@pytest.mark.slow
def test_resume_gives_identical_metrics(resumed_runs):
    full = read_jsonl(os.path.join(resumed_runs["full"], "metrics.jsonl"))
    split = read_jsonl(os.path.join(resumed_runs["split"], "metrics.jsonl"))
    assert [r["epoch"] for r in full] == [r["epoch"] for r in split] == [0, 1, 2, 3]
    for a, b in zip(full, split):
        for key in ("loss_cls", "loss_cesc", "loss_mv", "loss_total", "accuracy", "generated_per_step"):
            assert a["train"][key] == b["train"][key], (a["epoch"], key)
        assert a["test"] == b["test"]
    assert resumed_runs["full_report"].per_class == resumed_runs["split_report"].per_class


@pytest.mark.slow
def test_metrics_jsonl_one_line_per_epoch(resumed_runs):
    records = read_jsonl(os.path.join(resumed_runs["full"], "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert [r["lr"] for r in records] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    for record in records:
        assert set(record["train"]) >= {"loss_cls", "loss_cesc", "loss_mv", "loss_total", "accuracy",
                                        "generated_per_step", "images_per_second"}
        assert set(record["test"]) == {"top1", "many", "medium", "few"}
        assert 0 <= record["test"]["top1"] <= 100
        assert record["test"]["many"] is None           # no class has more than 100 images
    # RSG generates from the threshold epoch (3) only
    assert [r["train"]["generated_per_step"] > 0 for r in records] == [False, False, False, True]
    assert [r["train"]["loss_mv"] != 0 for r in records] == [False, False, False, True]


@pytest.mark.slow
def test_tensorboard_event_files(resumed_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = os.path.join(resumed_runs["full"], "tensorboard")
    assert glob.glob(os.path.join(folder, "events.out.tfevents.*"))
    events = EventAccumulator(folder)
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss_total", "train/lr", "test/top1", "train_step/total"):
        assert tag in tags
    assert [s.step for s in events.Scalars("train/loss_total")] == [0, 1, 2, 3]
    assert [s.value for s in events.Scalars("train/lr")] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    # the resumed run writes a second event file into the same folder
    assert len(glob.glob(os.path.join(resumed_runs["split"], "tensorboard", "events.out.tfevents.*"))) == 2


@pytest.mark.slow
def test_run_directory_contents(resumed_runs):
    folder = resumed_runs["full"]
    assert {"config.yaml", "last.pt", "best.pt", "metrics.jsonl", "train.log", "tensorboard"} <= set(os.listdir(folder))
    assert not glob.glob(os.path.join(folder, "*.tmp*"))
    with open(os.path.join(folder, "config.yaml")) as f:
        stored = yaml.safe_load(f)
    assert config_from_dict(stored) == resumed_runs["full_cfg"]
    # the resumed run's config.yaml is the one it resumed with (4 epochs)
    with open(os.path.join(resumed_runs["split"], "config.yaml")) as f:
        assert config_from_dict(yaml.safe_load(f)) == resumed_runs["split_cfg"]
    last = load_checkpoint(os.path.join(folder, "last.pt"))
    assert last["class_counts"] == TINY_COUNTS
    assert last["config"] == config_to_dict(resumed_runs["full_cfg"])
    assert last["format"] == CHECKPOINT_FORMAT
    best = load_checkpoint(os.path.join(folder, "best.pt"))
    records = read_jsonl(os.path.join(folder, "metrics.jsonl"))
    best_top1 = max(r["test"]["top1"] for r in records)
    assert best["best_top1"] == pytest.approx(best_top1)
    assert records[best["best_epoch"]]["test"]["top1"] == pytest.approx(best_top1)
    assert best["epoch"] == best["best_epoch"] + 1
    assert last["best_top1"] == pytest.approx(best_top1)


# ---------------------------------------------------------------------------------------------
# Stopping: non-finite losses and signals


class WrappedLoss(nn.Module):
    """The configured loss, with a hook called before each step's loss."""

    def __init__(self, inner, before_call):
        super().__init__()
        self.inner = inner
        self.before_call = before_call
        self.calls = 0

    def forward(self, logits, targets, class_weights=None):
        self.calls += 1
        loss = self.inner(logits, targets, class_weights)
        return self.before_call(self.calls, loss)


def patch_loss(monkeypatch, before_call):
    def build(cfg, counts):
        return WrappedLoss(build_loss(cfg, counts), before_call)
    monkeypatch.setattr(engine_build, "build_loss", build)


@pytest.mark.slow
def test_non_finite_loss_stops_without_saving(make_tiny_config, monkeypatch, restore_torch_globals):
    path = make_tiny_config("nan", train={"epochs": 3})
    cfg = load_config(path)
    last = os.path.join(cfg.output_dir, "last.pt")
    snapshot = {}

    def poison(call, loss):
        if call <= TINY_STEPS_PER_EPOCH:            # epoch 0 trains normally
            return loss
        if "bytes" not in snapshot:                 # first step of epoch 1: last.pt is epoch 0's
            with open(last, "rb") as f:
                snapshot["bytes"] = f.read()
        return loss * float("nan")

    patch_loss(monkeypatch, poison)
    with pytest.raises(UserError) as info:
        fit(cfg)
    message = str(info.value)
    assert "nan" in message.lower() and "epoch 1" in message
    assert last in message
    with open(last, "rb") as f:
        assert f.read() == snapshot["bytes"]
    assert load_checkpoint(last)["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))] == [0]
    assert not glob.glob(os.path.join(cfg.output_dir, "*.tmp*"))


def test_non_finite_loss_in_first_epoch_leaves_no_checkpoint(make_tiny_config, monkeypatch,
                                                             restore_torch_globals):
    cfg = load_config(make_tiny_config("nan0"))
    patch_loss(monkeypatch, lambda call, loss: loss * float("inf") if call == 2 else loss)
    with pytest.raises(UserError, match="inf|nan"):
        fit(cfg)
    assert not os.path.exists(os.path.join(cfg.output_dir, "last.pt"))
    assert not os.path.exists(os.path.join(cfg.output_dir, "best.pt"))


def stop_at(call_number):
    def before_call(call, loss):
        if call == call_number:
            os.kill(os.getpid(), signal.SIGTERM)    # StopRequest turns it into a flag
        return loss
    return before_call


@pytest.mark.slow
def test_stop_mid_epoch_saves_and_resume_finishes(make_tiny_config, monkeypatch, restore_torch_globals):
    path = make_tiny_config("stop", train={"epochs": 3})
    cfg = load_config(path)
    patch_loss(monkeypatch, stop_at(TINY_STEPS_PER_EPOCH + 2))     # epoch 1, step 1
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        fit(cfg)
    assert signal.getsignal(signal.SIGTERM) == handler               # the handler is restored
    assert info.value.code == 128 + signal.SIGTERM
    state = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    assert (state["epoch"], state["step"]) == (1, 2)
    monkeypatch.setattr(engine_build, "build_loss", build_loss)
    fit(load_config(path), resume="auto")
    state = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    assert (state["epoch"], state["step"]) == (3, 0)
    assert [r["epoch"] for r in read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))] == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["standard", "device"])
def test_a_run_stopped_mid_epoch_resumes_to_the_weights_of_an_unbroken_run(make_tiny_config, monkeypatch,
                                                                          restore_torch_globals, loader):
    """Augmentation and RSG draw from the process's generators: a mid-epoch checkpoint keeps their
    state, so the rest of the epoch draws what the unbroken run drew (single process, augmentation in
    the main process: data.num_workers 0 or the device loader)."""
    sections = dict(train={"epochs": 3, "deterministic": True}, data={"loader": loader})
    unbroken = load_config(make_tiny_config("unbroken", **sections))
    fit(unbroken)
    path = make_tiny_config("broken", **sections)
    patch_loss(monkeypatch, stop_at(TINY_STEPS_PER_EPOCH + 2))     # epoch 1, step 1: RSG generates
    with pytest.raises(SystemExit):
        fit(load_config(path))
    assert load_checkpoint(os.path.join(load_config(path).output_dir, "last.pt"))["step"] == 2
    monkeypatch.setattr(engine_build, "build_loss", build_loss)
    fit(load_config(path), resume="auto")
    full = load_checkpoint(os.path.join(unbroken.output_dir, "last.pt"))["model"]
    resumed = load_checkpoint(os.path.join(load_config(path).output_dir, "last.pt"))["model"]
    assert [key for key in full if not torch.equal(full[key], resumed[key])] == []


@pytest.mark.slow
def test_stop_on_last_step_of_epoch_then_resume(make_tiny_config, monkeypatch, restore_torch_globals):
    path = make_tiny_config("stop_last", train={"epochs": 2})
    cfg = load_config(path)
    patch_loss(monkeypatch, stop_at(TINY_STEPS_PER_EPOCH))          # epoch 0, its last step
    with pytest.raises(SystemExit):
        fit(cfg)
    monkeypatch.setattr(engine_build, "build_loss", build_loss)
    fit(load_config(path), resume="auto")
    state = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    assert (state["epoch"], state["step"]) == (2, 0)
    assert [r["epoch"] for r in read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))] == [0, 1]


@pytest.mark.slow
def test_sigterm_subprocess_then_resume(tmp_path):
    """train.py killed with SIGTERM after its first epoch exits 143 with a resumable last.pt."""
    output_dir = tmp_path / "run"
    # 80 images for class 0 down to 8: 323 images, 10 steps of 32 per epoch
    tree = tiny_config_dict(output_dir, data={"max_per_class": 80}, train={"epochs": 3})
    path = write_config(tmp_path / "sigterm.yaml", tree)
    steps_per_epoch = sum(imbalanced_counts(80, 10, 10, "longtail")) // 32
    assert steps_per_epoch == 10
    metrics = output_dir / "metrics.jsonl"
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        process = subprocess.Popen(script_command("train.py", "--config", path), cwd=ROOT, env=SCRIPT_ENV,
                                   stdout=out, stderr=err)
        try:
            deadline = time.time() + 90
            while time.time() < deadline and process.poll() is None:
                if metrics.exists() and metrics.read_text().count("\n") >= 1:
                    break
                time.sleep(0.02)
            assert process.poll() is None, "train.py ended before it could be stopped"
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stderr = (tmp_path / "err.log").read_text()
    assert returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "stopped by signal 15" in stderr
    state = load_checkpoint(str(output_dir / "last.pt"))
    assert state["step"] > 0 or state["epoch"] >= 1
    assert state["epoch"] < 3
    interrupted = (state["epoch"], state["step"])

    result = run_script("train.py", "--config", path, "--resume", "auto")
    assert result.returncode == 0, result.stderr
    assert f"resumed from {output_dir / 'last.pt'}: epoch {interrupted[0]}, step {interrupted[1]}" in result.stderr
    state = load_checkpoint(str(output_dir / "last.pt"))
    assert (state["epoch"], state["step"]) == (3, 0)
    assert [r["epoch"] for r in read_jsonl(metrics)] == [0, 1, 2]


def test_bf16_falls_back_to_float32_on_a_cpu_without_native_bf16(monkeypatch, caplog):
    from engine import runtime

    assert runtime.Precision("bf16", torch.device("cuda")).dtype == torch.bfloat16    # a GPU: never questioned
    monkeypatch.setattr(runtime, "has_native_bf16", lambda device: False)
    monkeypatch.setattr(runtime.log, "propagate", True)        # setup_logging (an earlier fit) turns it off
    with caplog.at_level("WARNING", logger=runtime.log.name):
        precision = runtime.Precision("bf16", torch.device("cpu"))
    assert precision.dtype is None and precision.scaler is None                   # float32, no autocast
    assert "no native bf16" in caplog.text and "running in float32" in caplog.text
    monkeypatch.setattr(runtime, "has_native_bf16", lambda device: True)
    assert runtime.Precision("bf16", torch.device("cpu")).dtype == torch.bfloat16
