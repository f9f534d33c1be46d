"""RSG's internals (rsg/module.py `diagnostics`, engine/diagnostics.py): what each statistic is,
that it is detached and stays on the device, and that a run writes it per epoch."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config_dict, torch_globals_restored, write_config
from engine.config import load_config
from engine.diagnostics import DiagnosticsSums, center_use
from engine.run import fit
from rsg import RSG


def make_rsg(**kwargs):
    torch.manual_seed(0)
    rsg = RSG(in_channels=8, num_classes=4, frequent_classes=[0], num_centers=3, contrastive_channels=8,
              threshold_epoch=1, **kwargs)
    with torch.no_grad():
        rsg.centers.normal_()         # not at zero, so that samples and displacements differ
    return rsg.train()


BATCH = torch.randn(12, 8, 4, 4)
TARGETS = torch.tensor([0] * 6 + [1, 1, 2, 2, 3, 3])


def test_before_the_threshold_the_cesc_terms_add_up():
    rsg = make_rsg()
    _, _, losses = rsg(BATCH, TARGETS)
    stats = rsg.diagnostics
    assert set(stats) == {"center_loss", "contrastive_loss", "contrastive_accuracy", "assignment_entropy",
                          "assignment_mass", "assignment_argmax"}
    assert torch.allclose(stats["center_loss"] + stats["contrastive_loss"], losses["cesc"].detach())
    assert 0.0 <= float(stats["contrastive_accuracy"]) <= 1.0
    assert 0.0 <= float(stats["assignment_entropy"]) <= math.log(3) + 1e-6
    # each sample's gamma sums to one: the per-class mass counts the class's samples
    assert torch.allclose(stats["assignment_mass"].sum(dim=1), torch.tensor([6.0, 2.0, 2.0, 2.0]))
    assert torch.equal(stats["assignment_argmax"].sum(dim=1), torch.tensor([6.0, 2.0, 2.0, 2.0]))
    assert all(not value.requires_grad and value.device == BATCH.device for value in stats.values())


def test_from_the_threshold_the_mv_terms_and_norms():
    rsg = make_rsg()
    rsg.set_epoch(1)
    features, targets, losses = rsg(BATCH, TARGETS)
    stats = rsg.diagnostics
    assert "contrastive_loss" not in stats
    terms = stats["mv_direction"] + stats["mv_length"] + stats["mv_contrast"]
    assert torch.allclose(terms, losses["mv"].detach())
    generated = features[len(BATCH):]
    assert torch.allclose(stats["norm_generated"], generated.norm(dim=1).mean())
    rare = (TARGETS != 0).nonzero().squeeze(1)      # beta s_freq / s_rare = 1: one generated per rare sample
    assert torch.allclose(stats["norm_rare"], BATCH[rare].norm(dim=1).mean(), atol=1e-5)
    # the cosine of the direction term: sum over positions of |cos - 1| = HW (1 - mean cos) when cos <= 1
    hw = BATCH.shape[2] * BATCH.shape[3]
    assert float(stats["cosine_transformed_rare"]) == pytest.approx(1 - float(stats["mv_direction"]) / hw, abs=1e-5)


def test_only_the_kept_mv_terms_are_recorded():
    rsg = make_rsg(mv_terms=(True, False, False))
    rsg.set_epoch(1)
    rsg(BATCH, TARGETS)
    assert "mv_direction" in rsg.diagnostics and "mv_length" not in rsg.diagnostics
    assert "mv_contrast" not in rsg.diagnostics


def test_evaluation_and_switched_off_record_nothing():
    rsg = make_rsg()
    rsg.eval()
    rsg(BATCH, TARGETS)
    assert rsg.diagnostics == {}
    rsg.train()
    rsg.record_diagnostics = False
    rsg.set_epoch(1)
    rsg(BATCH, TARGETS)
    assert rsg.diagnostics == {}


def test_epoch_sums_average_over_the_steps_that_recorded():
    rsg = make_rsg()
    sums = DiagnosticsSums(torch.nn.Sequential(rsg))        # found inside a wrapper
    rsg(BATCH, TARGETS)
    first = float(rsg.diagnostics["center_loss"])
    sums.add()
    rsg.set_epoch(1)
    rsg(BATCH, TARGETS)
    second = float(rsg.diagnostics["center_loss"])
    mv = float(rsg.diagnostics["mv_direction"])
    sums.add()
    scalars, classes = sums.epoch_values(sums.device_totals(BATCH.device).tolist())   # as the loop reads them
    assert scalars["rsg_center_loss"] == pytest.approx((first + second) / 2)
    assert scalars["rsg_mv_direction"] == pytest.approx(mv)                  # one step recorded it
    assert len(classes["centers_used"]) == 4 and all(1 <= u <= 3 for u in classes["centers_used"])


def test_center_use_counts_the_centers_a_class_uses():
    mass = [[5.0, 5.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]          # host numbers, as the loop reads them
    hits = [[5.0, 5.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    usage = center_use({"assignment_mass": mass, "assignment_argmax": hits})
    assert usage["centers_used"][:2] == pytest.approx([2.0, 3.0]) and usage["centers_used"][2] is None
    assert usage["centers_argmax"] == [2, 3, None]


@pytest.mark.slow
def test_a_run_logs_the_diagnostics_per_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_config(tmp_path / "run.yaml", tiny_config_dict(tmp_path / "run", train={"epochs": 2}))
    with torch_globals_restored():
        fit(load_config(path))
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    before, after = records[0], records[1]            # T_th = 1
    assert {"rsg_center_loss", "rsg_contrastive_loss", "rsg_contrastive_accuracy", "rsg_centers_used"} <= set(before["train"])
    assert "rsg_mv_direction" not in before["train"]
    assert {"rsg_mv_direction", "rsg_mv_length", "rsg_mv_contrast", "rsg_norm_generated", "rsg_norm_rare",
            "rsg_norm_fd_rare", "rsg_norm_transformed", "rsg_spread_generated",
            "rsg_cosine_transformed_rare"} <= set(after["train"])
    assert len(after["rsg_classes"]["centers_used"]) == 10 and len(after["test_per_class"]) == 10
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/rsg_mv_direction", "train/rsg_centers_used", "test_per_class/class_009"} <= set(tags)
    assert os.path.isfile(tmp_path / "run" / "threshold.pt")
