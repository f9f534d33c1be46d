"""Branching a run at T_th (engine/branch.py): a branch that changes nothing continues exactly like
the parent, a branch with RSG off keeps the parent's backbone and optimizer state and trains, and a
branch that changes what acted before the branch point is refused in one line."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import error_lines, read_jsonl, run_script, tiny_config_dict, torch_globals_restored, write_config
from core.errors import UserError
from engine.branch import BRANCH_FILE, branch_conflicts, prepare_branch, start_branch
from engine.checkpoint import file_sha256, load_checkpoint
from engine.config import config_to_dict, load_config
from engine.distributed import DistributedContext
from engine.build import build_run
from engine.run import fit

# Every test uses the module's trained parent run (several seconds to set up).
pytestmark = pytest.mark.slow

THRESHOLD = 3
SECTIONS = dict(
    train={"epochs": 4, "deterministic": True},
    rsg={"threshold_epoch": THRESHOLD},
    loss={"reweight_start": THRESHOLD},
    optim={"lr": 0.05, "warmup_epochs": 1, "milestones": [2, THRESHOLD], "decay": 0.1},
)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A 4-epoch RSG run (generation and DRW from epoch 3), deterministic on the CPU."""
    tmp = tmp_path_factory.mktemp("branch")
    path = write_config(tmp / "parent.yaml", tiny_config_dict(tmp / "parent", **SECTIONS))
    with torch_globals_restored():
        fit(load_config(path))
    return {"tmp": tmp, "config": path, "folder": str(tmp / "parent"),
            "threshold": str(tmp / "parent" / "threshold.pt")}


def branch_config(parent, name, *overrides):
    return load_config(parent["config"], [f"output_dir={parent['tmp'] / name}", *overrides])


def test_every_rsg_run_keeps_its_threshold_checkpoint(parent):
    state = load_checkpoint(parent["threshold"])
    assert state["epoch"] == THRESHOLD and state["step"] == 0
    assert any(key.startswith("rsg.") for key in state["model"])


def test_unchanged_branch_continues_bit_exactly(parent):
    cfg = branch_config(parent, "same")
    with torch_globals_restored():
        fit(cfg, branch_from=parent["threshold"])
    ours = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    theirs = load_checkpoint(os.path.join(parent["folder"], "last.pt"))
    assert ours["epoch"] == theirs["epoch"] == 4
    assert [k for k in theirs["model"] if not torch.equal(theirs["model"][k], ours["model"][k])] == []
    for key, value in theirs["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], ours["optimizer"]["state"][key]["momentum_buffer"])
    # metrics.jsonl: the parent's epochs 0-2, then epoch 3 trained by the branch, equal to the parent's
    mine, parents = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl")), read_jsonl(
        os.path.join(parent["folder"], "metrics.jsonl"))
    assert [r["epoch"] for r in mine] == [0, 1, 2, 3]
    for key in ("loss_cls", "loss_cesc", "loss_mv", "accuracy", "generated_per_step", "rsg_mv_direction"):
        assert mine[3]["train"][key] == parents[3]["train"][key], key
    assert mine[3]["test"] == parents[3]["test"] and mine[3]["test_per_class"] == parents[3]["test_per_class"]
    record = json.load(open(os.path.join(cfg.output_dir, BRANCH_FILE)))
    assert record["epoch"] == THRESHOLD and record["parent_folder"] == os.path.abspath(parent["folder"])
    assert record["sha256"] == file_sha256(parent["threshold"]) and record["changed"] == {}


def test_branch_without_rsg_keeps_the_backbone_and_trains(parent):
    cfg = branch_config(parent, "no_rsg", "rsg.enabled=false")
    state = load_checkpoint(parent["threshold"])
    with torch_globals_restored():
        run = build_run(cfg, DistributedContext(), torch.device("cpu"), resuming=True)
        epoch, step, _ = start_branch(run, prepare_branch(parent["threshold"], cfg))
    assert (epoch, step) == (THRESHOLD, 0)
    weights = run.model.state_dict()
    assert not any(key.startswith("rsg.") for key in weights)
    assert set(weights) == {k for k in state["model"] if not k.startswith("rsg.")}
    assert all(torch.equal(weights[k], state["model"][k]) for k in weights)
    # momentum buffers follow their parameters by name, not by position
    parent_names = [n for n, _ in build_run(load_config(parent["config"]), DistributedContext(),
                                            torch.device("cpu"), resuming=True).model.named_parameters()]
    for index, (name, _) in enumerate(run.model.named_parameters()):
        expected = state["optimizer"]["state"][parent_names.index(name)]["momentum_buffer"]
        assert torch.equal(run.trainer.optimizer.state_dict()["state"][index]["momentum_buffer"], expected)
    with torch_globals_restored():
        report = fit(cfg, branch_from=parent["threshold"])
    last = load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))
    assert last["epoch"] == 4 and not any(key.startswith("rsg.") for key in last["model"])
    moved = [k for k in last["model"] if last["model"][k].is_floating_point()
             and not torch.equal(last["model"][k], state["model"][k])]
    assert len(moved) > 10 and 0 <= report.top1 <= 100
    records = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))
    assert records[-1]["epoch"] == 3 and records[-1]["train"]["generated_per_step"] == 0
    assert json.load(open(os.path.join(cfg.output_dir, BRANCH_FILE)))["changed"] == {"rsg.enabled": [True, False]}


@pytest.mark.parametrize("override, key", [
    ("model.backbone=resnet56", "model.backbone"),
    ("data.imbalance_ratio=5", "data.imbalance_ratio"),
    ("train.seed=1", "train.seed"),
    ("optim.milestones=[1,3]", "optim.milestones"),       # the lr of epoch 1 and 2 changes
    ("rsg.num_centers=4", "rsg.num_centers"),             # the centers trained before T_th
])
def test_branch_changing_what_acted_before_is_refused(parent, override, key):
    cfg = branch_config(parent, "refused", override)
    with pytest.raises(UserError) as info:
        prepare_branch(parent["threshold"], cfg)
    message = str(info.value)
    assert "\n" not in message and key in message and f"epoch {THRESHOLD}" in message
    assert not os.path.exists(cfg.output_dir)


def test_allowed_changes_act_only_after_the_branch_point(parent):
    stored = load_checkpoint(parent["threshold"])["config"]
    allowed = ["optim.milestones=[2,4]", "train.epochs=6", "rsg.mv_weight=0.1", "loss.reweight_start=4",
               "train.log_every=5", "rsg.enabled=false", "data.sampler=drs", "data.resample_start=3",
               "train.deterministic=false", "train.amp=bf16"]
    for override in allowed:
        assert branch_conflicts(stored, config_to_dict(branch_config(parent, "ok", override)), THRESHOLD) == [], override
    # the same changes are refused one epoch later, once the parent generated
    assert branch_conflicts(stored, config_to_dict(branch_config(parent, "ok", "rsg.enabled=false")), THRESHOLD + 1)
    assert branch_conflicts(stored, config_to_dict(branch_config(parent, "ok", "train.epochs=3")), THRESHOLD)


def test_a_branch_may_evaluate_differently_and_keeps_its_own_best(parent):
    """eval.* acts only at evaluation: allowed, and the parent's best (measured without the
    correction) is neither inherited nor copied."""
    state = load_checkpoint(parent["threshold"])
    assert state["best_epoch"] >= 0 and os.path.isfile(os.path.join(parent["folder"], "best.pt"))
    cfg = branch_config(parent, "posthoc", "eval.posthoc=logit_adjust", "eval.tau=0.5")
    assert branch_conflicts(state["config"], config_to_dict(cfg), THRESHOLD) == []
    with torch_globals_restored():
        fit(cfg, branch_from=parent["threshold"])
    # best.pt is the branch's own first evaluation (last.pt is written before an epoch's evaluation)
    assert load_checkpoint(os.path.join(cfg.output_dir, "best.pt"))["best_epoch"] == THRESHOLD
    assert load_checkpoint(os.path.join(cfg.output_dir, "last.pt"))["best_epoch"] == -1
    record = read_jsonl(os.path.join(cfg.output_dir, "metrics.jsonl"))[-1]
    assert record["posthoc"]["tau"] == 0.5
    # the same section as the parent's: the parent's best carries over, as before
    same = branch_config(parent, "same_eval")
    run = build_run(same, DistributedContext(), torch.device("cpu"), resuming=True)
    assert start_branch(run, prepare_branch(parent["threshold"], same))[2] == {
        "top1": state["best_top1"], "epoch": state["best_epoch"]}


def test_train_py_refuses_a_bad_branch_in_one_line(parent):
    out = parent["tmp"] / "cli_refused"
    result = run_script("train.py", "--config", parent["config"], "--branch-from", parent["threshold"],
                        f"output_dir={out}", "train.seed=5")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: --branch-from") and "train.seed" in lines[0]
    assert not out.exists()
    # into the parent's own folder, or from a checkpoint taken mid-epoch
    result = run_script("train.py", "--config", parent["config"], "--branch-from", parent["threshold"])
    assert result.returncode == 2 and "parent's folder" in result.stderr
