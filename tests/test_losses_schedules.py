"""Losses (LDAM, cross-entropy), DRW class weights, the lr schedule and the shot-group metrics."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from core.class_weights import class_balanced_weights
from core.errors import UserError
from engine.config import LossConfig, OptimConfig, load_config
from engine.metrics import accuracy_report, format_group_table, shot_group
from engine.schedules import class_weights, learning_rate
from losses import LOSSES, build_loss
from losses.classification import CrossEntropy, LDAMLoss, ldam_margins

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]   # CIFAR-10-LT, rho = 100


# ---------------------------------------------------------------------------------------------
# LDAM


def test_ldam_margins_proportional_to_n_to_minus_quarter():
    margins = ldam_margins(COUNTS, 0.5)
    assert margins.shape == (10,)
    assert margins.max() == pytest.approx(0.5)
    assert np.argmax(margins) == 9                       # the rarest class has the largest margin
    # m_c * n_c^(1/4) is the same constant for every class
    products = margins * np.power(np.array(COUNTS, dtype=np.float64), 0.25)
    np.testing.assert_allclose(products, products[0], rtol=1e-12)
    assert margins[0] == pytest.approx(0.5 * (50 / 5000) ** 0.25)
    np.testing.assert_allclose(ldam_margins([16, 1], 1.0), [0.5, 1.0])


def test_ldam_margins_equal_for_balanced_counts():
    np.testing.assert_allclose(ldam_margins([7, 7, 7], 0.3), [0.3, 0.3, 0.3])


def _direct_ldam(logits, targets, counts, max_margin, scale, weights=None):
    margins = torch.tensor([max_margin * (min(counts) / n) ** 0.25 for n in counts], dtype=torch.float64)
    shifted = logits.double().clone()
    rows = torch.arange(len(targets))
    shifted[rows, targets] -= margins[targets]
    per_sample = -F.log_softmax(scale * shifted, dim=1)[rows, targets]
    if weights is None:
        return per_sample.mean()
    w = weights.double()[targets]
    return (w * per_sample).sum() / w.sum()


@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_loss_equals_direct_computation(weighted):
    generator = torch.Generator().manual_seed(0)
    counts = [100, 40, 10, 3]
    logits = torch.rand(12, 4, generator=generator) * 2 - 1            # cosine logits in [-1, 1]
    targets = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0, 3, 3, 2, 0])
    weights = torch.tensor([0.2, 0.5, 1.3, 2.0]) if weighted else None
    loss = LDAMLoss(counts, max_margin=0.5, scale=30.0)(logits, targets, weights)
    expected = _direct_ldam(logits, targets, counts, 0.5, 30.0, weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the margin matters: without it the loss is smaller (the target logit is not lowered)
    plain = F.cross_entropy(30.0 * logits, targets, weight=weights)
    assert loss.item() > plain.item() + 1e-3


def test_ldam_loss_gradient_flows_and_input_untouched():
    logits = torch.zeros(2, 3, requires_grad=True)
    targets = torch.tensor([0, 2])
    before = logits.detach().clone()
    LDAMLoss([10, 5, 1], 0.5, 10.0)(logits, targets).backward()
    assert torch.equal(logits.detach(), before)
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_cross_entropy_with_weights_is_weighted_mean():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 3, generator=generator)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])
    weights = torch.tensor([0.5, 1.0, 3.0])
    per_sample = -F.log_softmax(logits, dim=1)[torch.arange(9), targets]
    w = weights[targets]
    expected = (w * per_sample).sum() / w.sum()
    assert CrossEntropy()(logits, targets, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    assert CrossEntropy()(logits, targets).item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert abs(expected.item() - per_sample.mean().item()) > 1e-3   # the weights change the value


def test_build_loss_from_config():
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), ["loss.max_margin=0.3", "loss.scale=10"])
    loss = build_loss(cfg, [100, 10])
    assert isinstance(loss, LDAMLoss)
    assert loss.scale == 10.0
    torch.testing.assert_close(loss.margins, torch.tensor([0.3 * 0.1 ** 0.25, 0.3]))
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), ["loss.name=ce"])
    assert isinstance(build_loss(cfg, [100, 10]), CrossEntropy)
    assert {"ce", "ldam"} <= set(LOSSES.names())
    with pytest.raises(UserError) as info:
        LOSSES.get("hinge")
    assert "'hinge'" in str(info.value)
    assert str(info.value).endswith("valid choices: " + ", ".join(LOSSES.names()))


# ---------------------------------------------------------------------------------------------
# DRW class weights


def test_class_balanced_weights_formula():
    counts = [1000, 100, 10, 1]
    beta = 0.999
    raw = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    expected = raw / raw.sum() * 4
    weights = class_balanced_weights(counts, beta)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights.sum() == pytest.approx(4.0)
    assert list(np.argsort(weights)) == [0, 1, 2, 3]           # rarer class, larger weight


def test_drw_weights_switch_on_at_reweight_start():
    loss_cfg = LossConfig(reweight="drw", reweight_start=160, reweight_beta=0.9999)
    assert class_weights(0, COUNTS, loss_cfg) is None
    assert class_weights(159, COUNTS, loss_cfg) is None
    at_start = class_weights(160, COUNTS, loss_cfg)
    later = class_weights(199, COUNTS, loss_cfg)
    assert at_start is not None
    np.testing.assert_allclose(at_start, class_balanced_weights(COUNTS, 0.9999))
    np.testing.assert_allclose(later, at_start)
    assert at_start.sum() == pytest.approx(10.0)
    assert at_start[9] > at_start[0]
    none_cfg = LossConfig(reweight="none", reweight_start=0)
    assert class_weights(0, COUNTS, none_cfg) is None
    assert class_weights(500, COUNTS, none_cfg) is None


# ---------------------------------------------------------------------------------------------
# Learning rate


@pytest.fixture(scope="module")
def recipe():
    return load_config(os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_rsg_r100.yaml"))


@pytest.mark.parametrize("epoch, expected", [
    (0, 0.02), (1, 0.04), (2, 0.06), (3, 0.08), (4, 0.1),
    (5, 0.1), (159, 0.1),
    (160, 0.001), (179, 0.001),
    (180, 1e-5), (199, 1e-5),
])
def test_cifar_recipe_learning_rate(recipe, epoch, expected):
    assert learning_rate(epoch, recipe.optim) == pytest.approx(expected, rel=1e-9)


def test_recipe_phases_coincide(recipe):
    # RSG generation and DRW start where the lr first drops (the paper's T_th = 160)
    assert recipe.rsg.threshold_epoch == recipe.loss.reweight_start == recipe.optim.milestones[0] == 160
    assert recipe.train.epochs == 200


def test_learning_rate_without_warmup_and_custom_decay():
    optim = OptimConfig(lr=1.0, warmup_epochs=0, milestones=[2, 4], decay=0.5)
    assert [learning_rate(e, optim) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


# ---------------------------------------------------------------------------------------------
# Shot-group metrics


def test_shot_group_boundaries():
    assert shot_group(101) == "many"
    assert shot_group(100) == "medium"
    assert shot_group(20) == "medium"
    assert shot_group(19) == "few"
    assert shot_group(0) == "few"


def test_accuracy_report_groups():
    # classes:          0    1    2    3   4   5
    train_counts = [500, 101, 100, 20, 19, 1]
    # class 0: 4 test images, 3 right (75%)   class 1: 2 images, 2 right (100%)  -> many = 87.5
    # class 2: 2 images, 1 right (50%)        class 3: 4 images, 0 right (0%)    -> medium = 25
    # class 4: 1 image, 1 right (100%)        class 5: 2 images, 1 right (50%)   -> few = 75
    targets = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5])
    predictions = np.array([0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 1, 2, 4, 5, 0])
    report = accuracy_report(predictions, targets, train_counts)
    assert report["per_class"] == pytest.approx([75.0, 100.0, 50.0, 0.0, 100.0, 50.0])
    assert report["many"] == pytest.approx(87.5)
    assert report["medium"] == pytest.approx(25.0)
    assert report["few"] == pytest.approx(75.0)
    # overall top-1 is over images (8 of 15), not the mean of the class accuracies (62.5)
    assert report["top1"] == pytest.approx(100 * 8 / 15)


def test_accuracy_report_empty_group_and_class_without_test_images():
    train_counts = [50, 30, 10, 5]                     # no class above 100: many is None
    targets = np.array([0, 0, 1, 2, 2])                # class 3 has no test image
    predictions = np.array([0, 1, 1, 2, 0])
    report = accuracy_report(predictions, targets, train_counts)
    assert report["many"] is None
    assert report["medium"] == pytest.approx((50.0 + 100.0) / 2)
    assert report["few"] == pytest.approx(50.0)        # class 3 (no image) is left out, not 0
    assert math.isnan(report["per_class"][3])
    assert report["top1"] == pytest.approx(60.0)
    table = format_group_table(report, "title")
    lines = table.splitlines()
    assert lines[0] == "title"
    assert lines[1].split() == ["Many", "Medium", "Few", "All"]
    assert lines[2].split() == ["-", "75.00", "50.00", "60.00"]


def test_evaluated_epochs_sparse_then_every_epoch_from_the_threshold():
    from engine.config import TrainConfig
    from engine.schedules import is_evaluation_epoch

    def evaluated(**keys):
        train = TrainConfig(**keys)
        return [epoch for epoch in range(train.epochs) if is_evaluation_epoch(epoch, train)]

    assert evaluated(epochs=5) == [0, 1, 2, 3, 4]
    assert evaluated(epochs=12, eval_every=5) == [4, 9, 11]                    # the last always
    # the CPU study's cadence: every 10 epochs while the lr is high, every epoch from T_th = 160
    late = evaluated(epochs=200, eval_every=10, eval_every_epoch_from=160)
    assert late == list(range(9, 160, 10)) + list(range(160, 200))
    assert evaluated(epochs=30, eval_every=6, eval_every_epoch_from=24) == [5, 11, 17, 23, 24, 25, 26, 27, 28, 29]
