"""What a run that continues a checkpoint may change in its config: only what has not acted yet.

A checkpoint taken after `epoch` epochs holds what its config computed in them. A run continuing it
under another config is the run that config describes (and its config.yaml tells the truth about
every epoch) only if each change acts from `epoch` on. So a continuation may change

- where and how fast it runs (RUN_KEYS: folder, data root, device, workers, logging, precision,
  compile...), which moves the results by floating-point differences at most;
- train.epochs, to no fewer epochs than were trained (a branch: more), while the lr of the epochs
  before stays as it was (a cosine schedule spreads over train.epochs);
- the lr, class-weight and sampler schedules where they agree before `epoch`;
- RSG: off while it has not generated; its generation settings while neither config has generated;
- how it evaluates (eval.*): a branch always (it starts its best-so-far afresh when they differ),
  a resumed run only before its first evaluation (metrics.jsonl and best.pt hold the old ones);
- where a classifier stage's parent file lies (stage.parent): the file is known by its sha256.

Anything else acted from epoch 0. The one rule serves three callers: a resume (engine/resume.py, at
the checkpoint's epoch; a checkpoint taken mid-epoch counts the epoch begun), a branch
(engine/branch.py, at the branch point), and a finished run that a table runner would report as
done (tools/paper_tables.py, tools/rsg_pair.py, at its last epoch).
"""

from __future__ import annotations

import os

import yaml

from core.errors import UserError
from engine.config import RUN_KEYS, config_from_dict, config_to_dict, flatten
from engine.run_folder import last_finished_epoch
from engine.schedules import is_evaluation_epoch, learning_rate, reweight_start
from rsg import GENERATION_SETTINGS, generated_before

LR_KEYS = {"optim.lr", "optim.warmup_epochs", "optim.milestones", "optim.decay", "optim.milestone_decays"}
REWEIGHT_KEYS = {"loss.reweight", "loss.reweight_start", "loss.reweight_beta"}
SAMPLER_KEYS = {"data.sampler", "data.resample_start", "data.resample_beta"}
# RSG keys that act only once it generates (from rsg.threshold_epoch on): RSG's list.
GENERATION_KEYS = {f"rsg.{name}" for name in GENERATION_SETTINGS}
# What train.py read from a classifier stage's parent: the same file gives the same values; a
# config not yet started (the table runner's request) has none.
PARENT_RECORD_KEYS = {"stage.parent_sha256", "stage.parent_epoch"}


def lr_before(cfg, epoch: int, total_epochs=None) -> list:
    """Per epoch before `epoch`: the lr of `cfg` (over `total_epochs`, default its own)."""
    return [learning_rate(e, cfg.optim, total_epochs or cfg.train.epochs) for e in range(epoch)]


def reweighting_before(cfg, epoch: int) -> list:
    """Per epoch before `epoch`: the class-weight beta in force, or None (uniform weights)."""
    start = reweight_start(cfg.loss)
    return [cfg.loss.reweight_beta if start is not None and e >= start else None for e in range(epoch)]


def sampling_before(cfg, epoch: int) -> list:
    """Per epoch before `epoch`: the re-sampling beta in force, or None (the plain epoch shuffle,
    which is also what DRS yields before resample_start)."""
    data = cfg.data
    return [data.resample_beta if data.sampler == "drs" and e >= data.resample_start else None
            for e in range(epoch)]


def generates_before(cfg, epoch: int) -> bool:
    return cfg.rsg.enabled and generated_before(epoch, cfg.rsg.threshold_epoch)


def evaluated_before(cfg, epoch: int) -> bool:
    return any(is_evaluation_epoch(e, cfg.train) for e in range(epoch))


def epochs_conflict(old, new, epoch: int, branch: bool):
    """Why the new train.epochs would change the epochs before `epoch`, or None."""
    if branch and new.train.epochs <= epoch:
        return f"the branch must train past epoch {epoch}"
    if new.train.epochs < epoch:
        return f"{epoch} epochs were trained already"
    if lr_before(old, epoch) != lr_before(old, epoch, new.train.epochs):
        return "the lr of the epochs before changes with it (optim.schedule cosine)"
    return None


def rsg_conflict(key: str, old, new, epoch: int):
    if generates_before(old, epoch):
        return f"RSG generated samples from epoch {old.rsg.threshold_epoch}, before epoch {epoch}"
    if key == "rsg.enabled":
        return None if old.rsg.enabled else ("there is no RSG to continue (branch from a run with RSG, which "
                                             "trains its centers before T_th)")
    if not new.rsg.enabled or (key in GENERATION_KEYS and not generates_before(new, epoch)):
        return None
    return "it acts before the threshold epoch"


def schedule_conflict(key: str, old, new, epoch: int):
    """The lr, class-weight and sampler schedules may change where they agree before `epoch` (the
    lr over the old train.epochs: that key is judged on its own)."""
    if key in LR_KEYS:
        same = lr_before(old, epoch) == lr_before(new, epoch, old.train.epochs)
    elif key in REWEIGHT_KEYS:
        same = reweighting_before(old, epoch) == reweighting_before(new, epoch)
    else:
        same = sampling_before(old, epoch) == sampling_before(new, epoch)
    return None if same else f"its schedule differs before epoch {epoch}"


def evaluation_conflict(old, epoch: int, branch: bool):
    """eval.* acts only when a model is evaluated: a branch starts its own evaluations."""
    if branch or not evaluated_before(old, epoch):
        return None
    return "the run's evaluations so far (metrics.jsonl, best.pt) used the old value"


def key_conflict(key: str, old, new, epoch: int, branch: bool = False):
    """Why changing `key` from the config `old` to `new` would change what acted in the first `epoch`
    epochs, or None when the change is allowed (module docstring)."""
    if key in RUN_KEYS or key == "stage.parent":
        return None
    if key.startswith("eval."):
        return evaluation_conflict(old, epoch, branch)
    if key in PARENT_RECORD_KEYS:    # the epoch follows the file; a config not started has no sha256
        return None if key == "stage.parent_epoch" or not new.stage.parent_sha256 else "another parent file"
    if key == "train.epochs":
        return epochs_conflict(old, new, epoch, branch)
    if key in LR_KEYS | REWEIGHT_KEYS | SAMPLER_KEYS:
        return schedule_conflict(key, old, new, epoch)
    if key.startswith("rsg."):
        return rsg_conflict(key, old, new, epoch)
    return "it acts from epoch 0"


def continuation_conflicts(old_config: dict, new_config: dict, epoch: int, branch: bool = False) -> list[str]:
    """The changed keys that a run continuing, under `new_config`, a checkpoint of `old_config` taken
    after `epoch` epochs may not make, each as 'key (old -> new: why)'; [] when it may continue.
    `branch`: the continuation is a new run (engine/branch.py), not the same one resumed."""
    old, new = config_from_dict(old_config), config_from_dict(new_config)
    old_values, new_values = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    conflicts = []
    for key in sorted(set(old_values) | set(new_values)):
        if old_values.get(key) != new_values.get(key):
            reason = key_conflict(key, old, new, epoch, branch)
            if reason:
                conflicts.append(f"{key} ({old_values.get(key)!r} -> {new_values.get(key)!r}: {reason})")
    return conflicts


def finished_run_conflicts(folder: str, cfg) -> list[str]:
    """How the finished run in `folder` differs from the run `cfg` asks for: the changes its
    continuation could not make at its last epoch ([] when its results are `cfg`'s)."""
    path = os.path.join(folder, "config.yaml")
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            stored = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read {path}: {error}; restore it, or remove the run in {folder}") from None
    config_from_dict(stored, source=path)      # a key of another code version: named with the file, here
    return continuation_conflicts(stored, config_to_dict(cfg), last_finished_epoch(folder) + 1)
