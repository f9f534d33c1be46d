"""Branching a run: continue another run's checkpoint, taken at an epoch boundary, into a new folder
with a config that differs only in what acts from that epoch on.

    python train.py --config configs/cifar10_lt/ldam_drw_r100.yaml \
        --branch-from runs/cifar10_lt/ldam_drw_rsg_r100/seed0/threshold.pt output_dir=runs/branch_wo

Before the threshold epoch T_th, RSG reads detached features and generates nothing, so a run with
RSG and one without follow the same kind of trajectory up to T_th. Branching both from the RSG
run's checkpoint at T_th (every RSG run keeps one: threshold.pt) makes them a paired comparison:
the same backbone at T_th, differing only in what RSG does afterwards.

What a branch keeps: the parent's weights (without RSG's when the branch turns RSG off), their
optimizer state (momentum buffers, matched by parameter name), the grad-scaler state, the epoch
and the best metric so far. The sampler order and every random draw are functions of (seed,
epoch) (engine/run.py, start_epoch_state), so an unchanged seed gives the parent's sampler and
RNG state at that epoch. A branch that changes nothing continues exactly like the parent.

What a branch may change (`branch_conflicts`: the rule of engine/continuation.py, which a resume
follows too): where and how it runs (folder, device, workers, logging); train.epochs; how it
evaluates (eval.*: the post-hoc correction and its tau grid, which touch no weight; the branch
then starts its best-so-far afresh, since the parent's best was measured another way); the lr,
class-weight and sampler schedules where they agree with the parent's before the branch epoch; RSG
off (from a parent that had not generated yet); RSG's generation settings (T_th, beta, alpha,
lambda2, MV terms, generation mode) while neither run has generated yet. Anything else (model,
data, seed, optimizer, loss, RSG's centers...) acted before the branch point, and the branch is
refused in one line.

The branch folder records its parent in branch.json (folder, checkpoint, epoch, sha256) and starts
its metrics.jsonl with the parent's lines of the epochs before the branch point. In the code the
checkpoint a branch continues is its `BranchSource` (branch.json keeps its `parent_*` keys, so that
the files written before read as they did); a classifier stage's parent is its first stage
(engine/stage.py), another thing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Optional

from core import LOGGER_NAME
from core.errors import UserError
from engine.checkpoint import file_sha256, load_checkpoint, load_model_weights, stored_config
from engine.config import RUN_KEYS, config_differences, config_from_dict, config_to_dict
from engine.continuation import continuation_conflicts
from engine.run_folder import BRANCH_FILE, METRICS_FILE, read_records, same_folder
from rsg import starts_generating_at

log = logging.getLogger(LOGGER_NAME)


def threshold_checkpoint_due(cfg, next_epoch: int) -> bool:
    """An RSG run keeps threshold.pt at the boundary before epoch T_th (the branch point)."""
    return cfg.rsg.enabled and starts_generating_at(next_epoch, cfg.rsg.threshold_epoch)


# ---------------------------------------------------------------------------------------------
# Which config changes a branch may make


def branch_conflicts(parent_config: dict, branch_config: dict, epoch: int) -> list[str]:
    """The changed keys a branch at `epoch` may not make, each as 'key (old -> new: why)': the rule of
    every continuation (engine/continuation.py), for a new run that starts its best-so-far afresh
    when it evaluates otherwise."""
    return continuation_conflicts(parent_config, branch_config, epoch, branch=True)


# ---------------------------------------------------------------------------------------------
# Starting a branch


@dataclass
class BranchSource:
    checkpoint: str                 # the parent's checkpoint file
    folder: str                     # the parent's run folder
    state: dict                     # the loaded checkpoint
    sha256: str
    same_evaluation: bool           # evaluates_alike: the best so far carries over
    history: Optional[list] = None  # source_history: its records before the branch point (None: no metrics.jsonl)
    best_checkpoint: Optional[str] = None   # inherited_best: its best.pt, when the branch takes it over

    @property
    def epoch(self) -> int:
        return self.state["epoch"]


def check_own_folder(checkpoint: str, cfg) -> None:
    """A branch never writes into its parent's folder (checked before the folder's ownership, whose
    message would only say that the folder holds a run)."""
    if same_folder(cfg.output_dir, os.path.dirname(os.path.abspath(checkpoint))):
        raise UserError(f"--branch-from {checkpoint}: the branch would write into its parent's folder; give it "
                        f"its own output_dir=... (or continue the parent with --resume)")


def evaluates_alike(parent_config: dict, cfg) -> bool:
    """The branch evaluates as its parent did (the same eval.* section), so the parent's best top-1 and
    best.pt compare with the branch's evaluations."""
    parents = config_to_dict(config_from_dict(parent_config))    # defaults filled in, as the branch's
    return parents["eval"] == config_to_dict(cfg)["eval"]


def prepare_branch(checkpoint: str, cfg) -> BranchSource:
    """Load and check the parent checkpoint before anything is written: a UserError (one line) if the
    branch cannot continue it."""
    check_own_folder(checkpoint, cfg)
    state = load_checkpoint(checkpoint)
    folder = os.path.dirname(os.path.abspath(checkpoint))
    where = f"--branch-from {checkpoint}"
    stored_config(state, checkpoint)      # a key of another code version: named with the file, here
    if state.get("step", 0):
        raise UserError(f"{where}: taken mid-epoch (epoch {state['epoch']}, step {state['step']}); a branch "
                        f"starts at an epoch boundary: use the run's threshold.pt or last.pt of a finished epoch")
    conflicts = branch_conflicts(state["config"], config_to_dict(cfg), state["epoch"])
    if conflicts:
        raise UserError(f"{where}: the branch's config differs from its parent's in what acts before the branch "
                        f"point (epoch {state['epoch']}): {'; '.join(conflicts)}. Change only what acts from "
                        f"epoch {state['epoch']} on, or train a new run")
    same_evaluation = evaluates_alike(state["config"], cfg)
    return BranchSource(checkpoint, folder, state, file_sha256(checkpoint), same_evaluation,
                  source_history(folder, state["epoch"], where),
                  inherited_best(folder, state, same_evaluation, where))


def source_history(folder: str, epoch: int, where: str) -> Optional[list]:
    """The parent's metrics.jsonl records of the epochs before `epoch`, the branch's first lines (None:
    the parent has no metrics.jsonl). A line a crash cut short is skipped, unless it costs the
    branch the record of one of those epochs."""
    path = os.path.join(folder, METRICS_FILE)
    if not os.path.isfile(path):
        return None
    records, unreadable = read_records(path)
    history = [record for record in records if record["epoch"] < epoch]
    lost = sorted(set(range(epoch)) - {record["epoch"] for record in history})
    if unreadable and lost:
        raise UserError(f"{where}: the parent's {path} has no readable record of epoch(s) {', '.join(map(str, lost))} "
                        f"(line(s) {', '.join(map(str, unreadable))} cut short by a crash); resume the parent once "
                        f"with --resume auto, which records its last epoch again from its last.pt, or branch from "
                        f"an earlier checkpoint")
    return history


def inherited_best(folder: str, state: dict, keep_best: bool, where: str) -> Optional[str]:
    """The parent's best.pt when the branch takes it over: it evaluates alike (`keep_best`) and that
    file is the best checkpoint of the epochs before the branch point. Read now, so that a broken
    one stops the branch before its folder exists."""
    path = os.path.join(folder, "best.pt")
    if not keep_best or state["best_epoch"] < 0 or not os.path.isfile(path):
        return None
    try:
        best = load_checkpoint(path, mmap=True)
    except UserError as error:
        raise UserError(f"{where}: {error}; the branch would take it over as its best checkpoint: restore it, or "
                        f"move it aside (the branch then starts without the parent's best.pt)") from None
    return path if best.get("best_epoch") == state["best_epoch"] else None


def start_branch(run, source: BranchSource):
    """Load the parent's state into the freshly built run; returns (epoch, step, best) as restore does."""
    state, model = source.state, run.model
    names = [name for name, _ in model.named_parameters()]
    weights = state["model"]
    if not any(name.startswith("rsg.") for name in names):
        weights = {k: v for k, v in weights.items() if not k.startswith("rsg.")}   # RSG turned off
    load_model_weights(model, weights, source.checkpoint, "the branch's model")
    run.trainer.optimizer.load_state_dict(optimizer_state_by_name(state, names, run.counts))
    run.trainer.precision.load_state_dict(state.get("scaler", {}))
    best = {"top1": -1.0, "epoch": -1}
    if source.same_evaluation:
        best = {"top1": state["best_top1"], "epoch": state["best_epoch"]}
    log.info("branched from %s (epoch %d, sha256 %s)", source.checkpoint, source.epoch, source.sha256[:12])
    return source.epoch, 0, best


def record_branch_source(source: BranchSource, cfg) -> None:
    """Rank 0, once the run owns its folder (engine/run_folder.py claim): the parent's history before the
    branch point and branch.json, the record of the parent."""
    inherit_history(source, cfg.output_dir)
    write_branch_json(source, cfg)


def source_parameter_names(state: dict, counts) -> list[str]:
    """The parent model's parameter names in optimizer order, from a model built of its config."""
    from models import build_model  # the model registry: only when the parameter sets differ

    parent_model = build_model(config_from_dict(state["config"]), counts, load_pretrained_weights=False)
    return [name for name, _ in parent_model.named_parameters()]


def optimizer_state_by_name(state: dict, names: list[str], counts) -> dict:
    """The parent's optimizer state for the branch's parameters: SGD keys its state by parameter
    position, so the positions are translated through the parameter names."""
    optimizer = state["optimizer"]
    same_model = state["config"]["rsg"]["enabled"] == any(name.startswith("rsg.") for name in names)
    parent_names = names if same_model else source_parameter_names(state, counts)
    position = {name: index for index, name in enumerate(parent_names)}
    missing = [name for name in names if name not in position]
    if missing:
        raise UserError(f"the parent checkpoint has no parameter {missing[0]} of the branch's model")
    groups = optimizer["param_groups"]
    if len(groups) != 1:
        raise UserError(f"the parent's optimizer has {len(groups)} parameter groups; branching supports one")
    by_parent = optimizer["state"]
    new_state = {index: by_parent[position[name]] for index, name in enumerate(names) if position[name] in by_parent}
    return {"state": new_state, "param_groups": [dict(groups[0], params=list(range(len(names))))]}


def inherit_history(source: BranchSource, output_dir: str) -> None:
    """The parent's records before the branch epoch and its best.pt of those epochs, both checked by
    prepare_branch, so that the branch's folder describes its whole training."""
    target = os.path.join(output_dir, METRICS_FILE)
    if source.history is None:
        log.warning("the parent folder %s has no metrics.jsonl: the branch's starts at epoch %d",
                    source.folder, source.epoch)
    elif not os.path.exists(target):
        with open(target, "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in source.history)
    if source.best_checkpoint is not None:
        shutil.copyfile(source.best_checkpoint, os.path.join(output_dir, "best.pt"))


def write_branch_json(source: BranchSource, cfg) -> None:
    changed = branch_changes(source.state["config"], config_to_dict(cfg))
    record = {"parent_folder": source.folder, "parent_checkpoint": os.path.abspath(source.checkpoint),
              "epoch": source.epoch, "sha256": source.sha256, "changed": changed}
    with open(os.path.join(cfg.output_dir, BRANCH_FILE), "w") as f:
        json.dump(record, f, indent=1)


def branch_changes(parent_config: dict, branch_config: dict) -> dict:
    """{key: [parent's value, branch's value]} of the keys beyond RUN_KEYS that differ."""
    return {key: list(values) for key, values in config_differences(parent_config, branch_config, RUN_KEYS).items()}


def read_branch(folder: str):
    """The run folder's branch.json as a dict, or None for a run that is not a branch."""
    path = os.path.join(folder, BRANCH_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
