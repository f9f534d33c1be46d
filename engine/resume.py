"""Resuming a run with its checkpoints: what a checkpoint holds (`checkpoint_state`: the same fields and
keys as in every earlier version), whether the config may continue it (`check_resumable`), loading
it into a built run (`restore`), and where training starts (`Start`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from core import LOGGER_NAME
from core.errors import UserError
from engine.build import Run
from engine.checkpoint import (CHECKPOINT_FORMAT, code_version, load_checkpoint, load_model_weights, save_checkpoint,
                               stored_config)
from engine.config import config_differences, config_to_dict
from engine.continuation import continuation_conflicts
from engine.distributed import broadcast_flag
from engine.run_folder import last_finished_epoch
from engine.runtime import generator_states
from engine.stage import check_same_first_stage, first_stage_record

log = logging.getLogger(LOGGER_NAME)


@dataclass
class Start:
    """Where the run's training starts: the epoch and step, the best evaluation so far, and what a
    resumed or branched run carries in."""
    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"top1": -1.0, "epoch": -1})
    pending: Optional[dict] = None     # the epoch record last.pt holds, when metrics.jsonl lacks it
    saved_record: Optional[dict] = None   # the epoch record of the checkpoint resumed from
    branch_source: Optional[object] = None   # --branch-from: the checkpoint this run continues (engine/branch.py)
    generators: Optional[dict] = None     # a mid-epoch checkpoint's generator states (generator_states)


def checkpoint_state(run: Run, epoch: int, step: int, best: dict, record: Optional[dict] = None) -> dict:
    """The checkpoint's plain dict: its keys are the file format (eval.py, resume, branches and the
    collector read them), unchanged since CHECKPOINT_FORMAT but for `generators`, read only when
    present (an older mid-epoch checkpoint resumes without it: `mid_epoch_generators`)."""
    optimizer = run.trainer.optimizer
    return {
        "format": CHECKPOINT_FORMAT,
        "model": run.model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scaler": run.trainer.precision.state_dict(),
        "epoch": epoch,           # the epoch to run next (or to continue, with step > 0)
        "step": step,             # the step of `epoch` to continue from (0: its start)
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "config": config_to_dict(run.cfg),
        "class_counts": list(run.counts),
        "code_version": code_version(),
        "parent": first_stage_record(run.cfg) if run.stage is not None else None,   # the classifier stage's
        "record": record,         # the finished epoch's metrics line, until metrics.jsonl has it
        "generators": generator_states(run.device) if step else None,   # mid-epoch: the rest draws the same
    }


def save_run(run: Run, name: str, epoch: int, step: int, best: dict, record: Optional[dict] = None) -> None:
    """Rank 0 alone writes checkpoints (atomically)."""
    if run.ctx.is_main:
        save_checkpoint(checkpoint_state(run, epoch, step, best, record), os.path.join(run.cfg.output_dir, name))


def check_resumable(path: str, state: dict, cfg) -> None:
    """Before anything is built: the config may differ from the checkpoint's only where its change
    has not acted yet (engine/continuation.py), else the run would go on as another run while
    config.yaml claimed the new values for all of it. An allowed change is logged."""
    stored_config(state, path)          # a key of another code version: named with the file, here
    epochs = state["epoch"] + (1 if state["step"] else 0)     # mid-epoch: that epoch has begun
    conflicts = continuation_conflicts(state["config"], config_to_dict(cfg), epochs)
    if conflicts:
        raise UserError(f"cannot resume {path} with this config: it differs from the run's in what acted in its "
                        f"{epochs} epoch(s) so far: {'; '.join(conflicts)}. Resume with the run's own values (its "
                        f"config.yaml), or train the new config into another output_dir=<path>")
    changed = [f"{key} ({old!r} -> {new!r})" for key, (old, new) in
               config_differences(state["config"], config_to_dict(cfg)).items()]
    if changed:  # allowed (more epochs, where and how fast it runs), but never silent
        log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))


def restore(path: str, state: dict, run: Run):
    """Load the checkpoint `state` (read from `path` by every rank) into the run. Returns (epoch,
    step, best)."""
    cfg = run.cfg
    describe = f"backbone {cfg.model.backbone}, RSG {'on' if cfg.rsg.enabled else 'off'}"
    load_model_weights(run.model, state["model"], path, describe)
    check_same_first_stage(cfg, state, path)
    if run.trainer.optimizer is not None:
        run.trainer.optimizer.load_state_dict(state["optimizer"])
    run.trainer.precision.load_state_dict(state.get("scaler", {}))
    log.info("resumed from %s: epoch %d, step %d", path, state["epoch"], state["step"])
    return state["epoch"], state["step"], stored_best(cfg.output_dir, state)


def mid_epoch_generators(state: dict, run: Run) -> Optional[dict]:
    """The generator states a mid-epoch checkpoint kept, when restoring them makes the rest of the
    epoch draw what an unbroken run draws: one process, augmentation in it (the device loader or no
    loader workers). Otherwise the epoch's draws restart from its seed (a correct run, not the same
    one), and the log says so."""
    if not state["step"]:
        return None
    cfg, where = run.cfg, f"epoch {state['epoch']}, step {state['step']}"
    if state.get("generators") is None:
        log.info("resumed mid-epoch (%s) from a checkpoint without generator states: the rest of the epoch "
                 "draws other augmentations and RSG samples than an unbroken run", where)
        return None
    in_process = cfg.data.loader == "device" or cfg.data.num_workers == 0
    if run.ctx.world_size > 1 or not in_process:
        log.info("resumed mid-epoch (%s) with %s: the rest of the epoch draws other augmentations and RSG "
                 "samples than an unbroken run (a resume from an epoch's end is exact)", where,
                 "several processes" if run.ctx.world_size > 1 else "data loader workers")
        return None
    return state["generators"]


def stored_best(output_dir: str, state: dict) -> dict:
    """The best evaluation so far: best.pt's record of itself when it exists (last.pt is written
    before its epoch's evaluation, so its own copy can be one epoch behind)."""
    best = {"top1": state["best_top1"], "epoch": state["best_epoch"]}
    path = os.path.join(output_dir, "best.pt")
    if os.path.isfile(path):
        try:
            saved = load_checkpoint(path, mmap=True)
        except UserError as error:
            raise UserError(f"{error}; it holds this run's best epoch: restore it, or move it aside to resume with "
                            f"last.pt's record of the best") from None
        if saved.get("best_top1", -1.0) > best["top1"]:
            best = {"top1": saved["best_top1"], "epoch": saved["best_epoch"]}
    return best


def pending_record(state: dict, output_dir: str) -> Optional[dict]:
    """The record of the epoch that last.pt ends, when metrics.jsonl does not have it: that epoch
    trained and was saved, but its evaluation (or the line itself) never finished."""
    record = state.get("record")
    if record is None or state["step"] != 0:
        return None
    done = last_finished_epoch(output_dir)
    return record if done is None or done < record["epoch"] else None


def pending_on_every_rank(pending: Optional[dict], saved_record: Optional[dict], device) -> Optional[dict]:
    """Rank 0 reads metrics.jsonl; the other ranks learn from it whether to complete an epoch
    (they evaluate too) and take the record from their own copy of the checkpoint."""
    if not torch.distributed.is_initialized():
        return pending
    if broadcast_flag(pending is not None, device):
        return pending if pending is not None else saved_record
    return None
