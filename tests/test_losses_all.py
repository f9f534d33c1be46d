"""Every registered loss against a direct computation, the class-weight and lr schedules, and one
short training run per loss (the losses of the paper's Tables 1 and 6)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config_dict
from core.class_weights import class_balanced_weights
from core.errors import UserError
from engine.config import LossConfig, OptimConfig, config_from_dict
from engine.schedules import class_weights, learning_rate, reweight_start
from losses import LOSSES, build_loss
from losses.classification import AMSoftmaxLoss, CrossEntropy, FocalLoss, LDAMLoss, ldam_margins

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]   # CIFAR-10-LT, rho = 100


def random_batch(seed: int, n: int = 16, classes: int = 5, cosine: bool = False):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=generator, dtype=torch.float64)
    if cosine:
        logits = torch.tanh(logits)                           # cosine logits lie in [-1, 1]
    targets = torch.randint(0, classes, (n,), generator=generator)
    weights = torch.rand(classes, generator=generator, dtype=torch.float64) + 0.1
    return logits, targets, weights


def weighted_mean(per_sample, targets, weights):
    if weights is None:
        return per_sample.mean()
    w = weights[targets]
    return (w * per_sample).sum() / w.sum()


def target_log_prob(logits, targets):
    """log p_t computed from its definition, log(exp(z_t) / sum_j exp(z_j)), row by row."""
    return torch.stack([row[t] - torch.log(torch.exp(row).sum()) for row, t in zip(logits, targets)])


def loss_config(**changes):
    return config_from_dict({"loss": changes})


# ---------------------------------------------------------------------------------------------
# The registry and its config path


def test_every_table_loss_is_registered_and_built_from_config():
    counts = [100, 30, 10]
    assert {"ce", "focal", "am", "ldam"} <= set(LOSSES.names())
    expected = {"ce": CrossEntropy, "focal": FocalLoss, "am": AMSoftmaxLoss, "ldam": LDAMLoss}
    for name, cls in expected.items():
        assert isinstance(build_loss(loss_config(name=name), counts), cls)
    focal = build_loss(loss_config(name="focal", focal_gamma=2.5), counts)
    assert focal.gamma == 2.5
    am = build_loss(loss_config(name="am", max_margin=0.35, scale=16.0), counts)
    assert (am.margin, am.scale) == (0.35, 16.0)


def test_focal_gamma_defaults_to_the_authors_value():
    assert LossConfig().focal_gamma == 1.0
    assert build_loss(loss_config(name="focal"), [3, 1]).gamma == 1.0


@pytest.mark.parametrize("name, head", [("ce", "linear"), ("focal", "linear"), ("am", "cosine"), ("ldam", "cosine")])
def test_auto_classifier_is_cosine_for_the_margin_losses(name, head):
    assert config_from_dict({"loss": {"name": name}}).head_kind == head
    forced = config_from_dict({"loss": {"name": name}, "model": {"classifier": "linear"}})
    assert forced.head_kind == "linear"


def test_bad_loss_settings_are_user_errors():
    with pytest.raises(UserError, match="loss.name"):
        loss_config(name="softmax")
    with pytest.raises(UserError, match="loss.focal_gamma"):
        loss_config(focal_gamma=-1)
    with pytest.raises(UserError, match="loss.reweight.*none, drw, cb"):
        loss_config(reweight="always")


# ---------------------------------------------------------------------------------------------
# Each loss against its formula


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_is_the_weighted_mean_of_minus_log_p_t(weighted):
    logits, targets, weights = random_batch(0)
    weights = weights if weighted else None
    expected = weighted_mean(-target_log_prob(logits, targets), targets, weights)
    torch.testing.assert_close(CrossEntropy()(logits, targets, weights), expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(weighted):
    logits, targets, weights = random_batch(1)
    weights = weights if weighted else None
    torch.testing.assert_close(FocalLoss(0.0)(logits, targets, weights),
                               F.cross_entropy(logits, targets, weight=weights))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_loss_formula(gamma, weighted):
    # mean over samples of (1 - p_t)^gamma * (-log p_t); with weights sum w_y l / sum w_y
    logits, targets, weights = random_batch(2)
    weights = weights if weighted else None
    log_p = target_log_prob(logits, targets)
    per_sample = (1 - torch.exp(log_p)) ** gamma * -log_p
    expected = weighted_mean(per_sample, targets, weights)
    torch.testing.assert_close(FocalLoss(gamma)(logits, targets, weights), expected)


def test_focal_down_weights_easy_samples():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.2]])          # sample 0 easy, sample 1 hard
    targets = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, targets, reduction="none")
    focal = torch.stack([FocalLoss(2.0)(logits[i:i + 1], targets[i:i + 1]) for i in range(2)])
    ratio = focal / ce
    assert ratio[0] < 0.001 and ratio[1] > 0.25               # (1 - p_t)^2 per sample


def test_focal_gradient_is_finite_at_a_confident_sample():
    logits = torch.tensor([[60.0, -60.0]], requires_grad=True)   # p_t rounds to 1
    FocalLoss(0.5)(logits, torch.tensor([0])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("weighted", [False, True])
def test_am_softmax_formula(weighted):
    # Wang et al. 2018: -log( e^{s (cos_y - m)} / (e^{s (cos_y - m)} + sum_{j != y} e^{s cos_j}) )
    cosines, targets, weights = random_batch(3, cosine=True)
    weights = weights if weighted else None
    margin, scale = 0.35, 30.0
    per_sample = []
    for row, t in zip(cosines, targets):
        target_term = torch.exp(scale * (row[t] - margin))
        others = sum(torch.exp(scale * row[j]) for j in range(len(row)) if j != t)
        per_sample.append(-torch.log(target_term / (target_term + others)))
    expected = weighted_mean(torch.stack(per_sample), targets, weights)
    torch.testing.assert_close(AMSoftmaxLoss(margin, scale)(cosines, targets, weights), expected)


def test_am_softmax_is_ldam_with_equal_counts():
    # LDAM's margins are all max_m when every class has the same count: the same loss
    cosines, targets, weights = random_batch(4, cosine=True)
    ldam = LDAMLoss([7] * 5, max_margin=0.4, scale=20.0)(cosines, targets, weights)
    torch.testing.assert_close(AMSoftmaxLoss(0.4, 20.0)(cosines, targets, weights), ldam)


def test_am_softmax_margin_raises_the_loss_and_leaves_input_alone():
    cosines, targets, _ = random_batch(5, cosine=True)
    before = cosines.clone()
    with_margin = AMSoftmaxLoss(0.35, 30.0)(cosines, targets)
    without = AMSoftmaxLoss(0.0, 30.0)(cosines, targets)
    assert with_margin > without + 1e-3
    torch.testing.assert_close(without, F.cross_entropy(30.0 * cosines, targets))
    assert torch.equal(cosines, before)


@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_formula(weighted):
    cosines, targets, weights = random_batch(6, cosine=True)
    weights = weights if weighted else None
    counts = [400, 100, 25, 9, 4]
    margins = [0.5 * (min(counts) / n) ** 0.25 for n in counts]            # m_c ~ n_c^(-1/4)
    shifted = cosines.clone()
    for i, t in enumerate(targets):
        shifted[i, t] -= margins[t]
    expected = weighted_mean(-target_log_prob(30.0 * shifted, targets), targets, weights)
    torch.testing.assert_close(LDAMLoss(counts, 0.5, 30.0)(cosines, targets, weights), expected)


def test_ldam_margins_scale_as_n_to_the_minus_quarter_with_the_largest_max_m():
    margins = ldam_margins(COUNTS, 0.5)
    assert margins.max() == pytest.approx(0.5) and margins.argmax() == len(COUNTS) - 1
    for count, margin in zip(COUNTS, margins):
        assert margin == pytest.approx(0.5 * (COUNTS[-1] / count) ** 0.25, rel=1e-12)


@pytest.mark.parametrize("name", ["ce", "focal", "am", "ldam"])
def test_every_loss_backpropagates_with_and_without_weights(name):
    counts = [50, 20, 5]
    loss = build_loss(loss_config(name=name), counts)
    for weights in (None, torch.tensor(class_balanced_weights(counts), dtype=torch.float32)):
        logits = torch.tanh(torch.randn(8, 3)).requires_grad_()
        value = loss(logits, torch.tensor([0, 1, 2, 0, 1, 2, 0, 0]), weights)
        value.backward()
        assert value.ndim == 0 and math.isfinite(value.item())
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Class weights: none, drw, cb


def test_class_balanced_weights_sum_to_the_number_of_classes():
    for counts, beta in ((COUNTS, 0.9999), ([500, 5], 0.99), ([3, 3, 3], 0.9)):
        weights = class_balanced_weights(counts, beta)
        assert weights.sum() == pytest.approx(len(counts))
        raw = [(1 - beta) / (1 - beta ** n) for n in counts]
        np.testing.assert_allclose(weights, np.array(raw) / sum(raw) * len(counts), rtol=1e-12)
    np.testing.assert_allclose(class_balanced_weights([3, 3, 3], 0.9), [1, 1, 1])


def test_reweight_start_of_each_schedule():
    assert reweight_start(LossConfig(reweight="none")) is None
    assert reweight_start(LossConfig(reweight="cb", reweight_start=160)) == 0
    assert reweight_start(LossConfig(reweight="drw", reweight_start=160)) == 160


@pytest.mark.parametrize("epoch", [0, 1, 159, 160, 199])
def test_cb_weights_apply_from_the_first_epoch(epoch):
    weights = class_weights(epoch, COUNTS, LossConfig(reweight="cb", reweight_start=160, reweight_beta=0.9999))
    np.testing.assert_allclose(weights, class_balanced_weights(COUNTS, 0.9999))


@pytest.mark.parametrize("epoch, on", [(0, False), (159, False), (160, True), (199, True)])
def test_drw_weights_apply_from_reweight_start(epoch, on):
    weights = class_weights(epoch, COUNTS, LossConfig(reweight="drw", reweight_start=160, reweight_beta=0.999))
    assert (weights is not None) == on
    if on:
        np.testing.assert_allclose(weights, class_balanced_weights(COUNTS, 0.999))
    assert class_weights(epoch, COUNTS, LossConfig(reweight="none", reweight_start=0)) is None


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


def lr_values(optim, epochs):
    return [learning_rate(epoch, optim) for epoch in epochs]


def test_cifar_recipe_with_a_single_decay_and_with_per_milestone_decays():
    # x0.01 at 160 and x0.0001 (relative to the base) at 180, after a 5-epoch warm-up
    epochs = [0, 4, 5, 159, 160, 179, 180, 199]
    expected = [0.02, 0.1, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5]
    single = OptimConfig(lr=0.1, warmup_epochs=5, milestones=[160, 180], decay=0.01)
    listed = OptimConfig(lr=0.1, warmup_epochs=5, milestones=[160, 180], decay=0.5, milestone_decays=[0.01, 0.01])
    assert lr_values(single, epochs) == pytest.approx(expected, rel=1e-12)
    assert lr_values(listed, epochs) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("recipe, checks", [
    # ImageNet-LT: 100 epochs, 5-epoch warm-up, x0.1 at 60, 80 and 95
    (dict(lr=0.1, warmup_epochs=5, milestones=[60, 80, 95], decay=0.1),
     {0: 0.02, 5: 0.1, 59: 0.1, 60: 0.01, 80: 1e-3, 94: 1e-3, 95: 1e-4, 99: 1e-4}),
    # Places-LT: 30 epochs from lr 0.01, no warm-up, x0.1 every 10 epochs
    (dict(lr=0.01, warmup_epochs=0, milestones=[10, 20], decay=0.1),
     {0: 0.01, 9: 0.01, 10: 1e-3, 19: 1e-3, 20: 1e-4, 29: 1e-4}),
    # iNaturalist 1x: 90 epochs, x0.1 at 50, 70 and 85
    (dict(lr=0.1, warmup_epochs=5, milestones=[50, 70, 85], decay=0.1),
     {4: 0.1, 49: 0.1, 50: 0.01, 70: 1e-3, 85: 1e-4, 89: 1e-4}),
    # iNaturalist 2x: 180 epochs, x0.1 at 100, 140 and 170
    (dict(lr=0.1, warmup_epochs=5, milestones=[100, 140, 170], milestone_decays=[0.1, 0.1, 0.1]),
     {99: 0.1, 100: 0.01, 139: 0.01, 140: 1e-3, 170: 1e-4, 179: 1e-4}),
])
def test_large_scale_milestone_schedules(recipe, checks):
    optim = OptimConfig(**recipe)
    assert lr_values(optim, checks) == pytest.approx(list(checks.values()), rel=1e-12)


def test_milestone_decays_may_differ_per_milestone():
    optim = OptimConfig(lr=1.0, warmup_epochs=0, milestones=[2, 4, 6], milestone_decays=[0.5, 0.1, 2.0])
    assert lr_values(optim, range(8)) == pytest.approx([1, 1, 0.5, 0.5, 0.05, 0.05, 0.1, 0.1], rel=1e-12)


def test_milestone_decays_must_match_the_milestones():
    with pytest.raises(UserError, match="optim.milestone_decays.*one factor per milestone"):
        config_from_dict({"optim": {"milestones": [60, 80, 95], "milestone_decays": [0.1, 0.1]}})
    with pytest.raises(UserError, match="optim.milestone_decays"):
        config_from_dict({"optim": {"milestones": [60], "milestone_decays": [0.0]}})
    with pytest.raises(UserError, match="optim.warmup_epochs"):
        config_from_dict({"optim": {"warmup_epochs": -1}})


# ---------------------------------------------------------------------------------------------
# One short run per loss: epoch 0 plain, epoch 1 with RSG generating and the deferred schedules on


SMOKE_RUNS = {
    "erm_cb_rw": {"loss": {"name": "ce", "reweight": "cb"}},
    "focal_drw": {"loss": {"name": "focal", "focal_gamma": 1.0, "reweight": "drw", "reweight_start": 1}},
    "m_drw": {"loss": {"name": "am", "max_margin": 0.35, "reweight": "drw", "reweight_start": 1}},
    "ldam_drs": {"loss": {"name": "ldam", "reweight": "none"},
                 "data": {"sampler": "drs", "resample_start": 1}},
}


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(SMOKE_RUNS))
def test_two_epoch_run_per_loss(run, tmp_path, restore_torch_globals):
    from engine.run import fit

    sections = SMOKE_RUNS[run]
    data = {"image_size": 8, "crop_padding": 1, "eval_batch_size": 512, **sections.get("data", {})}
    tree = tiny_config_dict(tmp_path / run, data=data, loss=sections["loss"],
                            rsg={"contrastive_channels": 8, "threshold_epoch": 1}, train={"epochs": 2})
    report = fit(config_from_dict(tree))
    assert 0 <= report.top1 <= 100
    with open(os.path.join(tmp_path, run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(math.isfinite(r["train"]["loss_cls"]) for r in records)
    assert records[0]["train"]["generated_per_step"] == 0 < records[1]["train"]["generated_per_step"]
