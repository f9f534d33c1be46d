"""Today's baselines: logit-adjusted and balanced-softmax losses, post-hoc logit adjustment and tau-norm at
evaluation, the class-balanced sampler, and the decoupled classifier stage (cRT, LWS, tau-norm)
from a first-stage checkpoint, each checked against its formula on small generated data."""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from conftest import ROOT, TINY_COUNTS, run_script, tiny_config_dict, write_config
from core.errors import UserError
from engine.checkpoint import load_checkpoint
from engine.config import config_from_dict, load_config
from engine.posthoc import Correction, best_tau, build_correction, corrected_report
from engine.schedules import learning_rate
from losses import LOSSES, build_loss
from losses.logit_adjusted import BalancedSoftmaxLoss, LogitAdjustedLoss
from models.heads import ScaledHead

COUNTS = [500, 150, 50, 15, 5]
ROOT_CONFIGS = os.path.join(ROOT, "configs", "beyond", "imagenet_lt")


def batch(seed: int, n: int = 12, classes: int = 5):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, classes, (n,), generator=generator)
    weights = torch.rand(classes, generator=generator, dtype=torch.float64) + 0.1
    return logits, targets, weights


def direct_weighted_mean(losses, targets, weights):
    if weights is None:
        return sum(losses) / len(losses)
    w = [float(weights[t]) for t in targets]
    return sum(wi * li for wi, li in zip(w, losses)) / sum(w)


# ---------------------------------------------------------------------------------------------
# The losses against their formulas


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_logit_adjusted_loss_is_menon_eq_10(tau, weighted):
    logits, targets, weights = batch(1)
    weights = weights if weighted else None
    prior = [n / sum(COUNTS) for n in COUNTS]
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):   # -log( e^{z_y + tau log pi_y} / sum_j e^{z_j + tau log pi_j} )
        numerator = math.exp(row[y] + tau * math.log(prior[y]))
        denominator = sum(math.exp(z + tau * math.log(p)) for z, p in zip(row, prior))
        per_sample.append(-math.log(numerator / denominator))
    loss = LogitAdjustedLoss(COUNTS, tau)(logits, targets, weights)
    assert float(loss) == pytest.approx(direct_weighted_mean(per_sample, targets.tolist(), weights), rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_balanced_softmax_is_ren_eq_4_and_la_at_tau_1(weighted):
    logits, targets, weights = batch(2)
    weights = weights if weighted else None
    per_sample = []
    for row, y in zip(logits.tolist(), targets.tolist()):   # -log( n_y e^{z_y} / sum_j n_j e^{z_j} )
        per_sample.append(-math.log(COUNTS[y] * math.exp(row[y]) / sum(n * math.exp(z) for n, z in zip(COUNTS, row))))
    balanced = BalancedSoftmaxLoss(COUNTS)(logits, targets, weights)
    assert float(balanced) == pytest.approx(direct_weighted_mean(per_sample, targets.tolist(), weights), rel=1e-6)
    assert float(balanced) == pytest.approx(float(LogitAdjustedLoss(COUNTS, 1.0)(logits, targets, weights)), rel=1e-5)


def test_new_losses_are_registered_linear_and_refuse_empty_classes():
    assert {"logit_adjusted", "balanced_softmax"} <= set(LOSSES.names())
    cfg = config_from_dict({"loss": {"name": "logit_adjusted", "logit_adjust_tau": 0.7}})
    loss = build_loss(cfg, COUNTS)
    assert isinstance(loss, LogitAdjustedLoss) and loss.tau == 0.7 and cfg.head_kind == "linear"
    assert isinstance(build_loss(config_from_dict({"loss": {"name": "balanced_softmax"}}), COUNTS), BalancedSoftmaxLoss)
    with pytest.raises(UserError, match="no training image"):
        build_loss(cfg, [10, 0, 3])


# ---------------------------------------------------------------------------------------------
# Evaluation-time corrections


def test_posthoc_logit_adjustment_and_tau_norm_formulas():
    logits, _, _ = batch(3)
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS))
    adjust = Correction("logit_adjust", (0.0, 1.0), log_prior=log_prior)
    torch.testing.assert_close(adjust.apply(logits, 0.0), logits)
    torch.testing.assert_close(adjust.apply(logits, 1.5), logits - 1.5 * log_prior)
    # LDAM's cosine head: the prior comes off s * cos, the logits its loss trained.
    ldam = config_from_dict({"loss": {"name": "ldam", "scale": 30.0}, "eval": {"posthoc": "logit_adjust"}})
    cosines = torch.tanh(logits).float()
    torch.testing.assert_close(build_correction(ldam, None, COUNTS).apply(cosines, 1.0),
                               30.0 * cosines - log_prior.float())

    torch.manual_seed(0)
    head = nn.Linear(6, 5).double()
    with torch.no_grad():
        head.weight.mul_(torch.arange(1, 6, dtype=torch.float64)[:, None])   # unequal norms
    features = torch.randn(8, 6, dtype=torch.float64)
    model = nn.Module()
    model.head = head
    cfg = config_from_dict({"eval": {"posthoc": "tau_norm"}})
    correction = build_correction(cfg, model, COUNTS)
    for tau in (0.0, 0.5, 1.0, 2.0):   # Kang et al.: w_c / ||w_c||^tau, no bias
        normalised = head.weight / head.weight.norm(dim=1, keepdim=True).pow(tau)
        expected = features @ normalised.t()
        torch.testing.assert_close(correction.apply(head(features).float(), tau).double(), expected,
                                   rtol=1e-5, atol=1e-5)
    at_one = correction.apply(head(features).float(), 1.0)   # tau = 1: the cosine of w_c times ||x||
    torch.testing.assert_close(at_one, (features @ F.normalize(head.weight, dim=1).t()).float(), rtol=1e-5, atol=1e-5)


def test_tau_is_chosen_on_val_and_fixed_without_val():
    # z - tau log(pi): class 0 gains 0.37 tau, rare class 4 gains 4.97 tau. Rows of class 4 need
    # tau >= ~0.11, rows of class 0 need tau <= ~0.65: only tau = 0.5 of the grid gets both right.
    logits = torch.tensor([[2.0, 0, 0, 0, 1.5]] * 4 + [[2.0, 0, 0, 0, -1.0]] * 4)
    targets = np.array([4] * 4 + [0] * 4)
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    correction = Correction("logit_adjust", (0.0, 0.5, 1.0), log_prior=log_prior)
    on_val = corrected_report(correction, logits, targets, COUNTS, "val")
    assert on_val["posthoc"]["tau"] == 0.5 and on_val["top1"] == 100.0
    assert on_val["posthoc"]["by_tau"]["0"]["top1"] == 50.0
    fixed = corrected_report(correction, logits, targets, COUNTS, "test", fixed_tau=0.0)
    assert fixed["posthoc"]["tau"] == 0.0 and fixed["top1"] == 50.0 and "fixed" in fixed["posthoc"]["chosen"]
    assert set(fixed["posthoc"]["by_tau"]) == {"0", "0.5", "1"}
    assert best_tau({0.0: {"top1": 1.0}, 1.0: {"top1": 3.0}, 2.0: {"top1": 3.0}}) == 1.0


def test_tau_grid_keys_are_checked():
    with pytest.raises(UserError, match="eval.tau.*not in eval.taus"):
        config_from_dict({"eval": {"posthoc": "logit_adjust", "taus": [0.0, 0.5], "tau": 1.0}})
    with pytest.raises(UserError, match="eval.posthoc.*valid choices"):
        config_from_dict({"eval": {"posthoc": "temperature"}})


def test_cosine_schedule_is_kangs_per_epoch_cosine_annealing():
    optim = config_from_dict({"optim": {"lr": 0.2, "warmup_epochs": 0, "schedule": "cosine"}}).optim
    expected = [0.2 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert [learning_rate(e, optim, 10) for e in range(10)] == pytest.approx(expected)
    model = nn.Linear(1, 1)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD(model.parameters(), lr=0.2), T_max=10)
    torch_lrs = []
    for _ in range(10):
        torch_lrs.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert torch_lrs == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# The class-balanced sampler


def test_class_balanced_sampler_draws_every_class_with_probability_one_over_c():
    """Counts 1000 .. 5 (rho 200); 20 epochs of len(dataset) draws. Each class frequency is a
    binomial mean: it must lie within 5 standard deviations sqrt(p (1 - p) / n) of p = 1 / C (a
    false failure has probability below 1e-5 per class), and within each class every sample is
    drawn (uniformly: the most drawn sample of the rarest class at most 2x the least drawn)."""
    from data.samplers import build_sampler

    counts = [1000, 400, 160, 64, 25, 10, 5]
    targets = np.repeat(np.arange(len(counts)), counts)
    cfg = config_from_dict({"data": {"sampler": "class_balanced"}})
    sampler = build_sampler(cfg.data, targets.tolist(), seed=3)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        draws.append(np.fromiter(iter(sampler), dtype=np.int64))
        assert len(draws[-1]) == len(targets)
    draws = np.concatenate(draws)
    frequency = np.bincount(targets[draws], minlength=len(counts)) / len(draws)
    p = 1.0 / len(counts)
    tolerance = 5 * math.sqrt(p * (1 - p) / len(draws))
    assert np.all(np.abs(frequency - p) < tolerance), (frequency, tolerance)
    rare = np.bincount(draws[targets[draws] == len(counts) - 1] - (len(targets) - counts[-1]), minlength=counts[-1])
    assert rare.min() > 0 and rare.max() <= 2 * rare.min()
    sampler.set_epoch(4)
    assert np.array_equal(np.fromiter(iter(sampler), dtype=np.int64), draws[4 * len(targets):5 * len(targets)])


# ---------------------------------------------------------------------------------------------
# The classifier stage from a first-stage checkpoint


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory):
    """A finished 2-epoch ERM-RSG run on the tiny digits set (linear head): its last.pt."""
    from engine.run import fit

    folder = tmp_path_factory.mktemp("stage1")
    tree = tiny_config_dict(folder / "run", loss={"name": "ce", "reweight": "none"})
    fit(config_from_dict(tree))
    return str(folder / "run" / "last.pt")


def stage_config(tmp_path, parent: str, stage: str, **sections) -> str:
    """The tiny config of a classifier stage from `parent`; `sections` update its sections."""
    settings = {"loss": {"name": "ce", "reweight": "none"}, "rsg": {"enabled": False},
                "stage": {"name": stage, "parent": parent}, "data": {"sampler": "class_balanced"},
                "optim": {"lr": 0.1, "warmup_epochs": 0, "schedule": "cosine"}}
    for section, values in sections.items():
        settings[section] = {**settings.get(section, {}), **values}
    tree = tiny_config_dict(tmp_path / stage, **settings)
    return write_config(tmp_path / f"{stage}.yaml", tree)


def build_stage_run(path: str):
    from engine.distributed import DistributedContext
    from engine.build import build_run
    from engine.stage import load_first_stage

    cfg = load_config(path)
    parent = load_first_stage(cfg)
    return build_run(cfg, DistributedContext(), torch.device("cpu"), resuming=False, first_stage=parent), parent


def one_step(run):
    from engine.loop import loss_weights, training_step

    run.model.train()
    images, targets = next(iter(run.data.train_loader))
    training_step(run.model, run.trainer.criterion, run.trainer.optimizer, images, targets, None, loss_weights(run.cfg))


def snapshot(model) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.slow
def test_crt_trains_the_reinitialised_classifier_only(first_stage, tmp_path):
    run, parent = build_stage_run(stage_config(tmp_path, first_stage, "crt"))
    parent_weights = parent["model"]
    assert not torch.equal(run.model.head.weight, parent_weights["head.weight"])      # re-initialised
    for name, value in run.model.backbone.state_dict().items():                          # the parent's features
        assert torch.equal(value, parent_weights[f"backbone.{name}"])
    before = snapshot(run.model)
    one_step(run)
    after = run.model.state_dict()
    for name, parameter in run.model.named_parameters():
        if name.startswith("head."):
            assert parameter.grad is not None and not torch.equal(after[name], before[name]), name
        else:
            assert parameter.grad is None, name
    for name in before:
        if not name.startswith("head."):        # parameters and BatchNorm statistics alike
            assert torch.equal(after[name], before[name]), name
    assert run.model.backbone.training is False and run.model.training is True


@pytest.mark.slow
def test_lws_changes_only_the_scales(first_stage, tmp_path):
    run, parent = build_stage_run(stage_config(tmp_path, first_stage, "lws"))
    assert isinstance(run.model.head, ScaledHead)
    assert torch.equal(run.model.head.head.weight, parent["model"]["head.weight"])
    before = snapshot(run.model)
    one_step(run)
    after = run.model.state_dict()
    for name, parameter in run.model.named_parameters():
        assert (parameter.grad is not None) == (name == "head.scales"), name
    assert not torch.equal(after["head.scales"], before["head.scales"])
    assert all(torch.equal(after[k], before[k]) for k in before if k != "head.scales")


@pytest.mark.slow
def test_stage_records_its_parent_and_refuses_a_replaced_one(first_stage, tmp_path):
    from engine.run import fit

    path = stage_config(tmp_path, first_stage, "crt", train={"epochs": 1})
    report = fit(load_config(path))
    assert 0 <= report.top1 <= 100
    folder = tmp_path / "crt"
    with open(first_stage, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    with open(folder / "config.yaml") as f:
        stage = yaml.safe_load(f)["stage"]
    assert stage == {"name": "crt", "parent": first_stage, "parent_sha256": sha256, "parent_epoch": 2}
    assert load_checkpoint(str(folder / "last.pt"))["parent"] == {"path": first_stage, "sha256": sha256,
                                                                  "epoch": 2, "stage": "crt"}
    # The same parent path, other contents: resuming must refuse (two first stages would mix).
    state = load_checkpoint(first_stage)
    state["epoch"] = 3
    replaced = str(tmp_path / "replaced.pt")
    torch.save(state, replaced)
    cfg = load_config(path, [f"stage.parent={replaced}"])
    with pytest.raises(UserError, match="cannot resume"):
        fit(cfg, resume=str(folder / "last.pt"))


def test_a_classifier_stage_compares_only_the_data_keys_its_dataset_reads(tmp_path):
    """The embedded digits read no data.root: a stage may give it another value,
    and a refusal for another dataset names the dataset, not a root the parent never read."""
    from engine.checkpoint import stored_config
    from engine.stage import check_same_training_data

    stage = {"loss": {"name": "ce", "reweight": "none"}, "rsg": {"enabled": False},
             "stage": {"name": "crt", "parent": "parent/last.pt"}}
    parent = {"config": tiny_config_dict(tmp_path / "parent", loss={"name": "ce", "reweight": "none"}),
              "class_counts": TINY_COUNTS}
    parent_cfg = stored_config(parent, "parent/last.pt")
    assert parent_cfg.data.name == "digits"
    check_same_training_data(config_from_dict(tiny_config_dict(tmp_path / "crt", **stage),
                                              ["data.root=/elsewhere"]), parent_cfg)
    other = config_from_dict(tiny_config_dict(tmp_path / "crt", **stage), ["data.name=cifar10", "data.root=/cifar"])
    with pytest.raises(UserError) as refused:
        check_same_training_data(other, parent_cfg)
    assert "data.name" in str(refused.value) and "data.root" not in str(refused.value)


@pytest.mark.slow
def test_a_parent_trained_on_other_data_is_refused_before_the_stage_reads_data(first_stage, tmp_path, monkeypatch):
    """The refusal is the run's only line: no dataset is read (or logged) for a stage that cannot run."""
    import engine.build
    from engine.run import fit

    def no_data(*args, **kwargs):
        raise AssertionError("the stage read its data before checking its parent's")

    monkeypatch.setattr(engine.build, "build_datasets", no_data)
    cfg = load_config(stage_config(tmp_path, first_stage, "crt"), ["data.imbalance_ratio=3"])
    with pytest.raises(UserError, match="stage.parent.*trained on other data.*data.imbalance_ratio"):
        fit(cfg)
    assert not os.path.exists(cfg.output_dir) or os.listdir(cfg.output_dir) == []


@pytest.mark.slow
def test_stage_settings_are_checked(first_stage, tmp_path):
    with pytest.raises(UserError, match="stage.parent.*must name"):
        config_from_dict({"stage": {"name": "crt"}, "rsg": {"enabled": False}})
    with pytest.raises(UserError, match="rsg.enabled.*feature-learning"):
        config_from_dict({"stage": {"name": "lws", "parent": "x.pt"}})
    with pytest.raises(UserError, match="train.epochs.*tau_norm"):
        config_from_dict({"stage": {"name": "tau_norm", "parent": "x.pt"}, "rsg": {"enabled": False}})
    # tau-norm of a cosine (LDAM) classifier is the identity: refused with the reason.
    cosine = stage_config(tmp_path, first_stage, "tau_norm", train={"epochs": 1},
                          loss={"name": "ldam", "reweight": "none"})
    with pytest.raises(UserError, match="classifier"):
        build_stage_run(cosine)


@pytest.mark.slow
def test_a_stage_in_its_parents_folder_is_refused(first_stage, tmp_path):
    """Its --overwrite would clear the parent's run files (last.pt among them)."""
    from engine.stage import load_first_stage

    cfg = load_config(stage_config(tmp_path, first_stage, "crt"), [f"output_dir={os.path.dirname(first_stage)}"])
    with pytest.raises(UserError, match="output_dir.*folder of the stage's parent"):
        load_first_stage(cfg)


@pytest.mark.parametrize("override, key", [
    ("data.subset=ldam_drw", "data.subset"),                 # other images of each class, the same counts
    ("data.subset_seed=4", "data.subset"),                   # first with a seed: the seeded pick
    ("data.name=digits", "data.name"),                       # another dataset with as many images per class
    ("data.root=/elsewhere", "data.root"),
    ("data.profile=step", "data.profile"),
    ("data.imbalance_ratio=20", "data.imbalance_ratio"),
])
def test_a_classifier_stage_refuses_a_parent_trained_on_other_data(override, key, tmp_path):
    """The parent's training set, not only its class counts, must be the stage's: one line naming the key."""
    from engine.checkpoint import stored_config
    from engine.stage import check_same_training_data

    parent_config = tiny_config_dict(tmp_path / "parent", loss={"name": "ce", "reweight": "none"},
                                     data={"name": "cifar10", "root": str(tmp_path / "data")})
    parent_state = {"config": parent_config, "class_counts": TINY_COUNTS}
    stage = {"loss": {"name": "ce", "reweight": "none"}, "rsg": {"enabled": False},
             "stage": {"name": "crt", "parent": "parent/last.pt"}, "data": {"name": "cifar10", "sampler": "class_balanced"}}
    found_another_way = f"data.root={os.path.relpath(parent_config['data']['root'])}"
    same = config_from_dict(tiny_config_dict(tmp_path / "crt", **stage), [found_another_way, "data.num_workers=2"])
    parent_cfg = stored_config(parent_state, "parent/last.pt")
    check_same_training_data(same, parent_cfg)                # the same data, found another way: accepted
    other = config_from_dict(tiny_config_dict(tmp_path / "crt", **stage), [found_another_way, override])
    with pytest.raises(UserError) as refused:
        check_same_training_data(other, parent_cfg)          # the counts agree: only the data differs
    message = str(refused.value)
    assert "\n" not in message and "stage.parent" in message and message.count("(parent ") == 1, message
    assert key in message, message


def entry_point(main, capsys, *args) -> str:
    """train.main / eval.main in this process (no interpreter start-up): exit 0, their stdout."""
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.slow
def test_end_to_end_tau_norm_and_eval_py_grid(first_stage, tmp_path, capsys):
    """tau_norm through train.py (no training: one evaluation over the grid), then eval.py on its
    checkpoint and on the first stage with post-hoc logit adjustment."""
    import eval as eval_script
    import train

    path = stage_config(tmp_path, first_stage, "tau_norm", train={"epochs": 1},
                        eval={"taus": [0.0, 0.5, 1.0], "tau": 1.0})
    entry_point(train.main, capsys, "--config", path)
    folder = tmp_path / "tau_norm"
    lines = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    assert len(lines) == 1 and lines[0]["posthoc"]["kind"] == "tau_norm" and lines[0]["posthoc"]["tau"] == 1.0
    assert lines[0]["test"]["top1"] == lines[0]["posthoc"]["by_tau"]["1"]["top1"]
    parent = load_checkpoint(first_stage)["model"]
    assert torch.equal(load_checkpoint(str(folder / "best.pt"))["model"]["head.weight"], parent["head.weight"])

    out = entry_point(eval_script.main, capsys, "--checkpoint", str(folder / "best.pt"))
    assert "tau_norm, tau chosen fixed" in out and "<-" in out
    with open(folder / "best.posthoc.json") as f:
        grid = json.load(f)
    assert set(grid["by_tau"]) == {"0", "0.5", "1"} and len(grid["by_tau"]["1"]["per_class"]) == len(TINY_COUNTS)
    assert grid["by_tau"]["1"]["top1"] == pytest.approx(lines[0]["test"]["top1"])

    entry_point(eval_script.main, capsys, "--checkpoint", first_stage, "--output", str(tmp_path / "la.csv"),
                "eval.posthoc=logit_adjust", "eval.taus=[0.0,1.0]")
    with open(tmp_path / "la.posthoc.json") as f:
        grid = json.load(f)
    assert grid["kind"] == "logit_adjust" and set(grid["by_tau"]) == {"0", "1"}
    plain = entry_point(eval_script.main, capsys, "--checkpoint", first_stage, "--output", str(tmp_path / "plain.csv"))
    assert f"{grid['by_tau']['0']['top1']:6.2f}" in plain      # tau = 0 is the plain model


@pytest.mark.slow
def test_crt_and_lws_through_train_py_and_eval_py(first_stage, tmp_path, capsys):
    """cRT as a user runs it (subprocesses), LWS through the same entry points in this process:
    a classifier stage, then its evaluation from its own checkpoint (no parent needed there)."""
    import eval as eval_script
    import train

    crt = stage_config(tmp_path, first_stage, "crt", train={"epochs": 2})
    result = run_script("train.py", "--config", crt)
    assert result.returncode == 0, result.stderr
    result = run_script("eval.py", "--checkpoint", str(tmp_path / "crt" / "last.pt"))
    assert result.returncode == 0 and "top-1 error" in result.stdout, result.stderr
    lws = stage_config(tmp_path, first_stage, "lws", train={"epochs": 1})
    entry_point(train.main, capsys, "--config", lws)
    assert "top-1 error" in entry_point(eval_script.main, capsys, "--checkpoint", str(tmp_path / "lws" / "last.pt"))


@pytest.mark.slow
def test_a_logit_adjusted_loss_trains_with_rsg_and_drw(tmp_path):
    from engine.run import fit

    for name in ("logit_adjusted", "balanced_softmax"):
        tree = tiny_config_dict(tmp_path / name, loss={"name": name, "reweight": "drw", "reweight_start": 1},
                                eval={"posthoc": "logit_adjust", "taus": [0.0, 1.0]})
        report = fit(config_from_dict(tree))
        lines = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        assert lines[-1]["train"]["generated_per_step"] > 0             # RSG generated in epoch 1
        assert math.isfinite(lines[-1]["train"]["loss_total"]) and report.posthoc["tau"] == 1.0


@pytest.mark.slow
def test_imagenet_lt_tau_norm_chooses_tau_on_val_and_eval_applies_it_to_test(tmp_path, capsys):
    """The ImageNet-LT configs shrunk to a generated dataset in the real list format: the ERM first
    stage, then tau-norm from its last.pt: tau is chosen on the validation list during the run, and
    eval.py --split test evaluates val first and reports the test list at that tau."""
    from test_large_scale_runs import SHRINK, make_fake

    import eval as eval_script
    import train

    make_fake(tmp_path / "fake")
    common = [f"data.root={tmp_path / 'fake'}", "data.num_workers=0", *SHRINK]
    first = os.path.join(ROOT_CONFIGS, "resnext50_erm.yaml")
    entry_point(train.main, capsys, "--config", first, f"output_dir={tmp_path / 'erm'}", *common)
    stage = os.path.join(ROOT_CONFIGS, "resnext50_erm_tau_norm.yaml")
    entry_point(train.main, capsys, "--config", stage, f"output_dir={tmp_path / 'tau'}",
                f"stage.parent={tmp_path / 'erm' / 'last.pt'}", *common)
    line = json.loads(open(tmp_path / "tau" / "metrics.jsonl").read())
    chosen = line["posthoc"]["tau"]
    assert line["posthoc"]["split"] == "val" and line["posthoc"]["chosen"] == "on the val split"
    assert line["val"]["top1"] == max(r["top1"] for r in line["posthoc"]["by_tau"].values())   # the evaluated split
    out = entry_point(eval_script.main, capsys, "--checkpoint", str(tmp_path / "tau" / "best.pt"), "--split", "test")
    assert f"tau_norm, tau chosen on the val split: {chosen:g}" in out
    with open(tmp_path / "tau" / "best.posthoc.json") as f:
        grid = json.load(f)
    assert grid["tau"] == chosen and grid["split"] == "test" and len(grid["by_tau"]) == 21
