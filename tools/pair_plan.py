"""The commands of a paired design (tools/rsg_pair.py, and tools/paper_tables.py --paired): per seed
a shared first stage up to T_th, then two branches from its threshold.pt, one with RSG and one
without (engine/branch.py). The folders: tools/run_layout.py, pair_folders."""

from __future__ import annotations

import os

from core.errors import UserError
from engine.branch import branch_conflicts
from engine.config import config_to_dict, load_config
from engine.continuation import finished_run_conflicts
from engine.run_folder import run_finished
from tools.run_layout import SHARED_STAGE_SUFFIX, pair_folders
from tools.run_planning import refuse_differing_runs, train_launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root


def check_pair(with_config: str, without_config: str, overrides: list) -> int:
    """T_th of the pair; a UserError when the two configs differ in more than RSG's settings."""
    with_rsg = load_config(os.path.join(ROOT, with_config), overrides)
    without = load_config(os.path.join(ROOT, without_config), overrides + ([] if without_config != with_config
                                                                             else ["rsg.enabled=false"]))
    if not with_rsg.rsg.enabled or without.rsg.enabled:
        raise UserError(f"{with_config} must have RSG on and {without_config} off (rsg.enabled)")
    threshold = with_rsg.rsg.threshold_epoch
    if not 0 < threshold < with_rsg.train.epochs:
        raise UserError(f"{with_config}: a shared first stage needs 0 < rsg.threshold_epoch < train.epochs, so that "
                        f"both the stage and the branches train an epoch; got rsg.threshold_epoch={threshold} "
                        f"and train.epochs={with_rsg.train.epochs}")
    conflicts = branch_conflicts(config_to_dict(with_rsg), config_to_dict(without), threshold)
    if conflicts:
        raise UserError(f"{without_config} is not {with_config} without RSG: {'; '.join(conflicts)}")
    return threshold


def pair_commands(with_config: str, without_config: str, seed: int, output_root: str, overrides: list,
                  gpus: int = 1) -> list:
    """The train.py commands still to run for one seed, in order (shared stage, w/o, w/); a finished
    stage that differs from the requested config is refused (engine/continuation.py)."""
    threshold = check_pair(with_config, without_config, overrides)
    cfg = load_config(os.path.join(ROOT, with_config), overrides)
    folders = pair_folders(output_root, with_config, seed)
    branch_from = ["--branch-from", os.path.join(folders["shared"], "threshold.pt")]
    without_extra = ["rsg.enabled=false"] if without_config == with_config else []
    # The shared stage's own keys after the user's, which come last everywhere else: it stops at
    # T_th whatever train.epochs says (that is the branches' length).
    shared_last = [f"train.epochs={threshold}", f"name={cfg.name}{SHARED_STAGE_SUFFIX}"]
    stages = [("shared", with_config, [], [], shared_last, threshold),
              ("without_rsg", without_config, branch_from, without_extra, [], cfg.train.epochs),
              ("with_rsg", with_config, branch_from, [], [], cfg.train.epochs)]
    commands, differing = [], {}
    for stage, config, options, first, last, epochs in stages:
        run_overrides = [f"train.seed={seed}", f"output_dir={folders[stage]}", *first, *overrides, *last]
        if not run_finished(folders[stage], epochs):
            commands.append(train_launcher(gpus) + ["--config", config, "--resume", "auto", *options, *run_overrides])
            continue
        conflicts = finished_run_conflicts(folders[stage], load_config(os.path.join(ROOT, config), run_overrides))
        if conflicts:
            differing[folders[stage]] = conflicts
    refuse_differing_runs(differing)
    return commands
