"""A loss declares the settings it reads where it registers (core.registry.Setting); the config's
`loss` section accepts them as keys like its own, checks them there, and reads and writes configs
exactly as before the settings moved out of engine/config.py."""

from __future__ import annotations

import os

import pytest
import yaml

from conftest import ROOT, write_config
from core.errors import UserError
from core.registry import Registry, Setting
from engine.config import config_from_dict, config_to_dict, load_config
from losses import LOSSES, build_loss

# Resolved configs written by main at d33d95d (its dump_config, as in a run folder's config.yaml
# and a checkpoint's "config"), one per loss and its settings: {config path: config dict}.
OLD_CONFIGS = os.path.join(ROOT, "tests", "fixtures", "d33d95d_resolved_configs.yaml")
LOSS_KEYS = ["name", "max_margin", "scale", "focal_gamma", "logit_adjust_tau", "reweight", "reweight_start",
             "reweight_beta"]
COUNTS = [50, 20, 5]


def old_configs() -> dict:
    with open(OLD_CONFIGS) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("path", sorted(old_configs()))
def test_a_config_written_by_d33d95d_rebuilds_to_the_same_values(path):
    old = old_configs()[path]
    assert config_to_dict(config_from_dict(old)) == old


@pytest.mark.parametrize("path", sorted(old_configs()))
def test_the_repository_configs_load_to_what_d33d95d_loaded(path):
    assert config_to_dict(load_config(os.path.join(ROOT, path))) == old_configs()[path]


def test_the_loss_section_keeps_its_keys_and_their_order():
    assert list(config_to_dict(load_config(os.path.join(ROOT, "configs", "quickstart.yaml")))["loss"]) == LOSS_KEYS


@pytest.mark.parametrize("name, margin_of", [("ldam", lambda loss: loss.margins.max().item()),
                                             ("am", lambda loss: loss.margin)])
def test_a_shared_setting_reaches_each_loss_that_reads_it(tmp_path, name, margin_of):
    path = write_config(tmp_path / "c.yaml", {"loss": {"name": name, "max_margin": 0.25}})
    cfg = load_config(path, ["loss.scale=16"])
    loss = build_loss(cfg, COUNTS)
    assert (margin_of(loss), loss.scale) == (pytest.approx(0.25), 16.0)


def test_a_setting_is_a_key_of_the_section_both_ways(tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", {"loss": {"name": "focal", "focal_gamma": 2}}))
    assert cfg.loss.focal_gamma == 2.0 and isinstance(cfg.loss.focal_gamma, float)
    cfg.loss.focal_gamma = 0.5
    assert build_loss(cfg, COUNTS).gamma == 0.5 and config_to_dict(cfg)["loss"]["focal_gamma"] == 0.5


def test_an_unknown_loss_key_names_it_and_every_valid_key(tmp_path):
    path = write_config(tmp_path / "c.yaml", {"loss": {"max_margn": 0.3}})
    with pytest.raises(UserError, match=rf"c.yaml: key 'loss.max_margn' is unknown; valid keys in 'loss': "
                                        rf"{', '.join(LOSS_KEYS)}$"):
        load_config(path)
    with pytest.raises(UserError, match="key 'loss.settings' is unknown"):
        load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), ["loss.settings={}"])


@pytest.mark.parametrize("override, problem", [("loss.scale=0", "key 'loss.scale' must be positive"),
                                               ("loss.focal_gamma=-1", "key 'loss.focal_gamma' must be >= 0"),
                                               ("loss.max_margin=big", "key 'loss.max_margin' must be float"),
                                               ("loss.scale.x=1", "'loss.scale' is a value, not a section")])
def test_a_setting_is_checked_by_its_declaration(tmp_path, override, problem):
    with pytest.raises(UserError, match=problem):
        load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), [override])


def test_each_loss_declares_the_settings_it_reads():
    assert {name: sorted(LOSSES.settings(name)) for name in LOSSES.names()} == {
        "am": ["max_margin", "scale"], "balanced_softmax": [], "ce": [], "focal": ["focal_gamma"],
        "ldam": ["max_margin", "scale"], "logit_adjusted": ["logit_adjust_tau"]}


def test_a_key_has_one_default_and_type_whoever_declares_it():
    registry = Registry("thing", "thing.name")
    registry.register("a", settings={"width": Setting(1.0, "a's width")})(object)
    registry.register("b", settings={"width": Setting(1.0, "b's width")})(object)
    with pytest.raises(ValueError, match="'width' as float 2.0, but thing 'a' declares it as float 1.0"):
        registry.register("c", settings={"width": Setting(2.0, "c's width")})(object)
    with pytest.raises(ValueError, match="the default -1 of setting 'depth' must be >= 0"):
        registry.register("d", settings={"depth": Setting(-1, "", lambda d: d >= 0, "must be >= 0")})(object)
    assert list(registry.declared_settings()["width"]) == ["a", "b"]
