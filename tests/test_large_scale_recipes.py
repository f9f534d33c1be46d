"""The ImageNet-LT, Places-LT and iNaturalist 2018 configs hold the recipes of the paper's section 4
(docs/CHOICES.md, "Where the recipes and file formats come from")."""

from __future__ import annotations

import glob
import os

import pytest
import torch

from conftest import ROOT
from engine.config import load_config
from engine.schedules import learning_rate

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
INATURALIST_STATS = ([0.466, 0.471, 0.380], [0.195, 0.194, 0.192])

# folder -> (data.name, classes, backbone, pretrained, epochs, lr, weight decay, warm-up, milestones,
#            deferred start (T_th, DRW, DRS), LDAM max_m, s, transform, mean / std)
RECIPES = {
    "imagenet_lt/resnext50": ("imagenet_lt", 1000, "resnext50_32x4d", "none", 100, 0.1, 2e-4, 5, [60, 80, 95],
                              80, 0.3, 30.0, "resized_crop_jitter", IMAGENET_STATS),
    "places_lt/resnet152": ("places_lt", 365, "resnet152", "torchvision", 30, 0.01, 1e-4, 0, [10, 20],
                            10, 0.2, 50.0, "resized_crop", IMAGENET_STATS),
    "inat2018/resnet50_1x": ("inat2018", 8142, "resnet50", "none", 90, 0.1, 5e-5, 5, [50, 70, 85],
                             70, 0.1, 50.0, "resized_crop_jitter", INATURALIST_STATS),
    "inat2018/resnet50_2x": ("inat2018", 8142, "resnet50", "none", 180, 0.1, 5e-5, 5, [100, 140, 170],
                             140, 0.1, 50.0, "resized_crop_jitter", INATURALIST_STATS),
}
CELLS = {
    "imagenet_lt/resnext50": ["ldam_drw", "ldam_drw_rsg", "ldam_drs", "ldam_drs_rsg"],
    "places_lt/resnet152": ["ldam_drs", "ldam_drs_rsg"],
    "inat2018/resnet50_1x": ["ldam_drw", "ldam_drw_rsg", "ldam_drs", "ldam_drs_rsg"],
    "inat2018/resnet50_2x": ["ldam_drw", "ldam_drw_rsg", "ldam_drs", "ldam_drs_rsg"],
}
CONFIGS = [f"configs/{prefix}_{cell}.yaml" for prefix, cells in CELLS.items() for cell in cells]


def test_exactly_these_cells():
    found = sorted(os.path.relpath(path, ROOT) for folder in ("imagenet_lt", "places_lt", "inat2018")
                   for path in glob.glob(os.path.join(ROOT, "configs", folder, "*.yaml")))
    assert found == sorted(CONFIGS)


@pytest.mark.parametrize("path", CONFIGS)
def test_recipe(path):
    cfg = load_config(os.path.join(ROOT, path))
    prefix, cell = path[len("configs/"):-len(".yaml")].rsplit("_ldam_", 1)
    (name, classes, backbone, pretrained, epochs, lr, weight_decay, warmup, milestones, start, max_margin, scale,
     transform, (mean, std)) = RECIPES[prefix]
    data, optim = cfg.data, cfg.optim
    assert (data.name, data.num_classes, data.profile, data.eval_split) == (name, classes, "none", "val")
    assert (data.transform, data.image_size, data.eval_resize, data.hflip) == (transform, 224, 256, True)
    assert data.mean == mean and data.std == std and data.batch_size == 256
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.model.classifier) == (backbone, pretrained, "auto")
    assert (cfg.train.epochs, optim.lr, optim.momentum, optim.weight_decay) == (epochs, lr, 0.9, weight_decay)
    assert (optim.warmup_epochs, optim.milestones) == (warmup, milestones)
    # x0.1 at each milestone; RSG, DRW and DRS start at the epoch where the lr reaches 0.001
    expected = [lr * 0.1 ** (i + 1) for i in range(len(milestones))]
    assert [learning_rate(m, optim) for m in milestones] == pytest.approx(expected)
    assert learning_rate(start, optim) == pytest.approx(0.001) and learning_rate(start - 1, optim) > 0.0011
    assert (cfg.loss.name, cfg.loss.max_margin, cfg.loss.scale) == ("ldam", max_margin, scale)
    if cell.startswith("drw"):
        assert (cfg.loss.reweight, cfg.loss.reweight_start, data.sampler) == ("drw", start, "shuffle")
    else:
        assert (cfg.loss.reweight, data.sampler, data.resample_start) == ("none", "drs", start)
    rsg = cfg.rsg
    assert rsg.enabled == cell.endswith("_rsg")
    assert (rsg.position, rsg.threshold_epoch, rsg.frequent_ratio, rsg.transfer_strength) == ("layer4", start, 0.2, 1.0)
    assert (rsg.num_centers, rsg.contrastive_channels, rsg.cesc_weight, rsg.mv_weight) == (15, 256, 0.1, 0.01)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["configs/imagenet_lt/resnext50_ldam_drs_rsg.yaml",
                                  "configs/places_lt/resnet152_ldam_drs_rsg.yaml",
                                  "configs/inat2018/resnet50_1x_ldam_drs_rsg.yaml"])
def test_model_builds_with_rsg_before_the_last_down_sampling(path):
    from models import build_model

    cfg = load_config(os.path.join(ROOT, path), ["model.pretrained=none"])   # no download in tests
    torch.manual_seed(0)
    model = build_model(cfg, [300, 200, 50, 30, 10, 5]).eval()
    logits, _, _ = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 6)
