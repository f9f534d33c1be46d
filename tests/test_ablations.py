"""The RSG ablations of Tables 3 and 5 as config switches: each changes exactly what it names, from
the YAML file through `build_model` to the RSG module. The module's math under each switch is
tested in test_rsg.py; here only the config path is."""

from __future__ import annotations

import os

import pytest

from conftest import ROOT
from core.errors import UserError
from data.imbalance import imbalanced_counts
from engine.config import config_from_dict, config_to_dict, flatten, load_config
from models import build_model
from rsg import RSG
from rsg.module import GENERATION_MODES

FOLDERS = ["cifar10_lt", "cifar10_step", "cifar100_lt", "cifar100_step"]

# config suffix -> (the one key it changes, its value there, the RSG attribute that shows it)
ABLATIONS = {
    "mv_no_term1": ("rsg.mv_terms", [False, True, True], ("mv_terms", (False, True, True))),
    "mv_no_term2": ("rsg.mv_terms", [True, False, True], ("mv_terms", (True, False, True))),
    "mv_no_term3": ("rsg.mv_terms", [True, True, False], ("mv_terms", (True, True, False))),
    "rare_center": ("rsg.generation", "rare_center", ("generation", "rare_center")),
    "direct": ("rsg.generation", "direct", ("generation", "direct")),
    "pos_stage2": ("rsg.position", "stage2", ("in_channels", 16)),
    "pos_pool": ("rsg.position", "pool", ("in_channels", 64)),
}

# What the built RSG is made of; an ablation may change one of these only.
RSG_ATTRIBUTES = ("in_channels", "num_classes", "num_centers", "transfer_strength", "threshold_epoch",
                  "mv_terms", "generation")


def load(folder: str, name: str):
    return load_config(os.path.join(ROOT, "configs", folder, f"{name}.yaml"))


def counts_of(cfg) -> list[int]:
    n_max, classes = {"cifar10": (5000, 10), "cifar100": (500, 100)}[cfg.data.name]
    return imbalanced_counts(n_max, classes, cfg.data.imbalance_ratio, cfg.data.profile)


def rsg_summary(model) -> dict:
    rsg = model.rsg
    summary = {name: getattr(rsg, name) for name in RSG_ATTRIBUTES}
    summary["frequent"] = rsg.is_frequent.tolist()
    summary["position"] = model.rsg_position
    return summary


@pytest.fixture(scope="module")
def full_models():
    """The full LDAM-DRW-RSG model (rho = 50) of each folder: the baseline of every ablation."""
    models = {}
    for folder in FOLDERS:
        cfg = load(folder, "ldam_drw_rsg_r50")
        models[folder] = (cfg, rsg_summary(build_model(cfg, counts_of(cfg))))
    return models


@pytest.mark.parametrize("suffix", sorted(ABLATIONS))
@pytest.mark.parametrize("folder", FOLDERS)
def test_ablation_config_changes_one_key(folder, suffix, full_models):
    full_cfg, _ = full_models[folder]
    cfg = load(folder, f"ldam_drw_rsg_{suffix}_r50")
    key, value, _ = ABLATIONS[suffix]
    ablated, full = flatten(config_to_dict(cfg)), flatten(config_to_dict(full_cfg))
    changed = {k for k in full if ablated[k] != full[k]} - {"name", "output_dir"}
    assert changed == {key}
    assert ablated[key] == value


@pytest.mark.slow
@pytest.mark.parametrize("suffix", sorted(ABLATIONS))
@pytest.mark.parametrize("folder", ["cifar10_lt", "cifar100_step"])
def test_ablation_reaches_the_built_rsg_and_nothing_else(folder, suffix, full_models):
    _, full = full_models[folder]
    cfg = load(folder, f"ldam_drw_rsg_{suffix}_r50")
    built = rsg_summary(build_model(cfg, counts_of(cfg)))
    attribute, expected = ABLATIONS[suffix][2]
    assert built[attribute] == expected
    changed = {name for name in full if built[name] != full[name]}
    if cfg.rsg.position != "default":                  # the position moves RSG and its width
        assert built["position"] == cfg.rsg.position
        assert changed == {"position", "in_channels"}
    else:
        assert changed == {attribute}


def test_full_model_defaults():
    cfg = load("cifar10_lt", "ldam_drw_rsg_r50")
    assert cfg.rsg.mv_terms == [True, True, True] and cfg.rsg.generation == "transform"
    model = build_model(cfg, counts_of(cfg))
    assert isinstance(model.rsg, RSG)
    assert model.rsg_position == "stage3" and model.rsg.in_channels == 32   # before the 2nd down-sampling
    assert model.rsg.mv_terms == (True, True, True) and model.rsg.generation == "transform"


@pytest.mark.parametrize("generation", GENERATION_MODES)
def test_generation_override_reaches_the_module(generation):
    cfg = config_from_dict({"data": {"image_size": 16}, "rsg": {"contrastive_channels": 8}},
                           [f"rsg.generation={generation}", "rsg.mv_terms=[true, false, false]"])
    rsg = build_model(cfg, [30, 20, 10, 5, 2]).rsg
    assert rsg.generation == generation and rsg.mv_terms == (True, False, False)


def test_config_choices_match_the_module():
    import dataclasses

    from engine.config import RSGConfig

    field = {f.name: f for f in dataclasses.fields(RSGConfig)}["generation"]
    assert field.metadata["choices"] == GENERATION_MODES


def test_bad_ablation_settings_are_user_errors():
    with pytest.raises(UserError, match="rsg.generation.*transform, rare_center, direct"):
        config_from_dict({"rsg": {"generation": "center"}})
    with pytest.raises(UserError, match="rsg.mv_terms.*3 values"):
        config_from_dict({"rsg": {"mv_terms": [True, False]}})
    with pytest.raises(UserError, match="rsg.mv_terms"):
        config_from_dict({"rsg": {"mv_terms": [1, 0, 1]}})
    with pytest.raises(UserError, match="rsg.position.*stage2"):
        build_model(config_from_dict({"rsg": {"position": "layer3"}}), [10, 5])


def test_rsg_off_ignores_the_ablation_keys():
    cfg = config_from_dict({"rsg": {"enabled": False, "generation": "direct"}})
    assert build_model(cfg, [10, 5]).rsg is None
