"""A run that continues a checkpoint may change only what has not acted yet (docs/USAGE.md,
"Resuming, stopping, failures"):
`--resume auto` refuses a change to what was computed, naming the keys, and allows where and how
fast it runs and more epochs; the table runner and the paired runner name the finished runs that
differ from the config they were asked for instead of reporting them done."""

from __future__ import annotations

import pytest
from test_tables import fake_run

from conftest import snapshot, tiny_config_dict, write_config
from core.errors import UserError
from engine.config import load_config
from tools.pair_plan import pair_commands
from tools.paper_tables import plan
from tools.run_layout import SHARED_STAGE_SUFFIX, pair_folders, run_dir
from tools.table_index import get_table


def conflicting_keys(old: dict, epoch: int, *overrides, branch=False, **sections) -> list[str]:
    """The keys the rule refuses when a checkpoint of the tiny config `old` taken after `epoch` epochs
    continues under `old` with `overrides` (and `sections`)."""
    from engine.config import config_from_dict, config_to_dict
    from engine.continuation import continuation_conflicts

    new = config_to_dict(config_from_dict(old, list(overrides)))
    for section, values in sections.items():
        new[section].update(values)
    return [c.split(" ")[0] for c in continuation_conflicts(old, new, epoch, branch=branch)]


def test_the_rule_allows_only_what_has_not_acted():
    """The tiny config at 4 epochs: lr warm-up 1 and milestones [1, 2], RSG and DRW from epoch 1."""
    old = tiny_config_dict("runs/x", train={"epochs": 4})
    assert conflicting_keys(old, 1, "train.epochs=6", "data.root=/moved", "data.num_workers=3", "train.amp=bf16",
                            "optim.milestones=[1,3]", "name=other") == []       # nothing that acted before epoch 1
    assert conflicting_keys(old, 2, "train.epochs=1") == ["train.epochs"]       # fewer than were trained
    assert conflicting_keys(old, 2, "optim.milestones=[1,3]") == []             # the lr of epochs 0, 1 stays
    assert conflicting_keys(old, 2, "optim.milestones=[2]") == ["optim.milestones"]
    assert conflicting_keys(old, 1, "optim.lr=0.5", "data.imbalance_ratio=2", "train.seed=3") == [
        "data.imbalance_ratio", "optim.lr", "train.seed"]
    assert conflicting_keys(old, 2, "rsg.enabled=false") == ["rsg.enabled"]   # it generated in epoch 1
    # eval.*: a resumed run has evaluated already; a branch starts its own evaluations
    assert conflicting_keys(old, 1, "eval.posthoc=logit_adjust") == ["eval.posthoc"]
    assert conflicting_keys(old, 1, "eval.posthoc=logit_adjust", branch=True) == []
    # a cosine schedule spreads over train.epochs: more epochs change the lr of the epochs before
    cosine = tiny_config_dict("runs/x", optim={"schedule": "cosine", "warmup_epochs": 0}, train={"epochs": 4})
    assert conflicting_keys(cosine, 2, "train.epochs=8") == ["train.epochs"]
    assert conflicting_keys(cosine, 0, "train.epochs=8") == []
    # a classifier stage's parent: found elsewhere is the same file; another sha256 is another parent
    stage = tiny_config_dict("runs/x", rsg={"enabled": False},
                             stage={"name": "crt", "parent": "a/last.pt", "parent_sha256": "ab", "parent_epoch": 4})
    assert conflicting_keys(stage, 1, "stage.parent=/b/last.pt") == []
    assert conflicting_keys(stage, 1, stage={"parent_sha256": ""}) == []       # a request not started yet
    assert conflicting_keys(stage, 1, stage={"parent_sha256": "cd", "parent_epoch": 5}) == ["stage.parent_sha256"]


@pytest.mark.slow
def test_resume_refuses_a_change_to_what_was_computed_and_allows_where_and_how_long(tmp_path,
                                                                                     restore_torch_globals):
    from engine.run import fit

    path = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 1}))
    fit(load_config(path))
    before = snapshot(tmp_path / "run")
    changed = load_config(path, ["data.imbalance_ratio=2", "optim.lr=0.5", "train.epochs=2"])
    with pytest.raises(UserError) as refused:
        fit(changed, resume="auto")
    message = str(refused.value)
    assert "\n" not in message and "data.imbalance_ratio" in message and "optim.lr" in message, message
    assert "train.epochs" not in message                  # more epochs: allowed
    assert snapshot(tmp_path / "run") == before           # config.yaml still the run's own
    longer = load_config(path, ["train.epochs=2", "data.num_workers=1", "train.log_every=3"])
    fit(longer, resume="auto")                            # where / how fast, and training further
    assert load_config(str(tmp_path / "run" / "config.yaml")).train.epochs == 2


RUN_CONFIG = "configs/cifar10_lt/erm_r100.yaml"


def test_the_table_runner_names_finished_runs_that_differ_from_the_request(tmp_path):
    table, out = get_table(6), str(tmp_path / "runs")
    folder = fake_run(run_dir(out, RUN_CONFIG, 0), RUN_CONFIG, 0, [70.0])

    def planned(*overrides):
        return plan(table, (0,), out, overrides=list(overrides), cells=RUN_CONFIG)

    assert planned()[0].done
    assert planned("data.root=/elsewhere", "train.progress=false")[0].done   # where and how: the same results
    assert planned("train.epochs=300")[0].train                             # train it further: a resume
    for override, key in (("optim.lr=0.5", "optim.lr"), ("train.epochs=100", "train.epochs"),
                          ("eval.posthoc=logit_adjust", "eval.posthoc")):
        with pytest.raises(UserError) as refused:
            planned(override)
        message = str(refused.value)
        assert "\n" not in message and folder in message and key in message, message


def test_the_paired_runner_names_finished_stages_that_differ_from_the_request(tmp_path):
    config, out = "configs/cifar10_lt/ldam_drw_rsg_r100.yaml", str(tmp_path / "runs")
    folders = pair_folders(out, config, 0)
    cfg = load_config(config)
    threshold = cfg.rsg.threshold_epoch
    fake_run(folders["shared"], config, 0, [40.0],
             overrides=[f"train.epochs={threshold}", f"name={cfg.name}{SHARED_STAGE_SUFFIX}"])
    fake_run(folders["without_rsg"], config, 0, [70.0], overrides=["rsg.enabled=false"])
    fake_run(folders["with_rsg"], config, 0, [72.0])
    assert pair_commands(config, config, 0, out, []) == []                  # all three finished, as asked
    with pytest.raises(UserError) as refused:
        pair_commands(config, config, 0, out, ["loss.max_margin=0.3"])
    message = str(refused.value)
    assert "\n" not in message and "loss.max_margin" in message, message
    assert all(folders[stage] in message for stage in ("shared", "without_rsg", "with_rsg")), message
