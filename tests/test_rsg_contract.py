"""RSG's contract is declared in rsg/ and every other room asks it (rsg/contract.py): the config's RSG
section and RSG's arguments are one set of names, a setting set in YAML or on the command line
reaches RSG, and a new option is one argument in rsg/ and one key in the config's RSG section.
The toy option below is what a newcomer adds: its test is the whole change outside rsg/."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import engine.config
from conftest import TINY_COUNTS, tiny_config_dict, write_config
from core.errors import UserError
from engine.build import build_optimizer
from engine.config import RSGConfig, load_config
from engine.diagnostics import PER_CLASS, SCALARS
from engine.loop import loss_weights
from models import build_model
from rsg import CLASS_DIAGNOSTICS, LOSS_TERMS, MV_TERMS, RSG, SCALAR_DIAGNOSTICS
from rsg.contract import trained_modules

NETWORK_ARGUMENTS = {"in_channels", "num_classes", "frequent_classes"}   # from the network and the data
# The RSG section's keys that are not RSG's arguments, each with the reason it is there.
NOT_ARGUMENTS = {"enabled": "whether the model has RSG", "position": "where the model has it",
                 "frequent_ratio": "alpha: gives frequent_classes from the class counts",
                 **{term.weight_key: f"Eq. 7's weight of {term.name}" for term in LOSS_TERMS}}
# A value other than the default for each of RSG's settings.
CHANGED = {"num_centers": 4, "contrastive_channels": 16, "transfer_strength": 0.5, "threshold_epoch": 3,
           "mv_terms": [True, False, True], "generation": "direct", "variant": "authors"}


def settings_of(cls=RSG) -> set[str]:
    return set(cls.argument_names()) - NETWORK_ARGUMENTS


def tiny_config(tmp_path, overrides=(), **rsg):
    return load_config(write_config(tmp_path / "config.yaml", tiny_config_dict(tmp_path / "run", rsg=rsg)),
                       list(overrides))


def test_the_rsg_section_and_rsgs_arguments_are_one_set_of_names():
    keys = {f.name for f in dataclasses.fields(RSGConfig)}
    assert settings_of() <= keys, f"RSG arguments without a config key: {settings_of() - keys}"
    assert keys - settings_of() == set(NOT_ARGUMENTS), "a config key that reaches neither RSG nor Eq. 7"
    assert set(CHANGED) == settings_of()


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_dotted_override_reaches_rsg(tmp_path, name):
    value = CHANGED[name]
    text = str(value).replace(" ", "").replace("True", "true").replace("False", "false")
    cfg = tiny_config(tmp_path, [f"rsg.{name}={text}"])
    assert RSG.arguments_from(cfg.rsg, TINY_COUNTS)[name] == value
    model = build_model(cfg, TINY_COUNTS, load_pretrained_weights=False)
    built = {"contrastive_channels": model.rsg.contrastive.linear.in_features, "mv_terms": list(model.rsg.mv_terms),
             "variant": "authors" if model.rsg.departures.mv_rows else "paper"}
    assert built.get(name, getattr(model.rsg, name, None)) == value


def test_the_section_gives_what_the_model_builder_spelled_out_before(tmp_path):
    cfg = tiny_config(tmp_path)
    arguments = RSG.arguments_from(cfg.rsg, TINY_COUNTS)
    assert arguments == {"num_classes": 10, "frequent_classes": [0, 1], "num_centers": cfg.rsg.num_centers,
                         "contrastive_channels": cfg.rsg.contrastive_channels,
                         "transfer_strength": cfg.rsg.transfer_strength, "threshold_epoch": cfg.rsg.threshold_epoch,
                         "mv_terms": cfg.rsg.mv_terms, "generation": cfg.rsg.generation, "variant": cfg.rsg.variant}
    assert loss_weights(cfg) == {"cls": 1.0, "cesc": cfg.rsg.cesc_weight, "mv": cfg.rsg.mv_weight}


# -- a toy option: one argument (in rsg/) and one key (the config's RSG section) ---------------------


class ToyRSG(RSG):
    """RSG with one more option, as a newcomer would add it to RSG.__init__."""

    def __init__(self, *args, toy_sharpness: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.toy_sharpness = toy_sharpness


@dataclasses.dataclass
class ToyRSGConfig(RSGConfig):
    toy_sharpness: float = 1.0      # the one key the config's RSG section gains


@pytest.fixture
def toy_option(monkeypatch):
    """The config's RSG section with the toy key, as if it were written into engine/config.py."""
    monkeypatch.setattr(engine.config, "RSGConfig", ToyRSGConfig)


@pytest.mark.parametrize("source", ["yaml", "override"])
def test_a_toy_option_declared_once_reaches_rsg(tmp_path, toy_option, source):
    cfg = (tiny_config(tmp_path, toy_sharpness=3) if source == "yaml"
           else tiny_config(tmp_path, ["rsg.toy_sharpness=3"]))
    arguments = ToyRSG.arguments_from(cfg.rsg, TINY_COUNTS)
    assert arguments["toy_sharpness"] == 3.0
    assert ToyRSG(8, **arguments).toy_sharpness == 3.0
    assert "toy_sharpness" not in RSG.arguments_from(cfg.rsg, TINY_COUNTS)    # plain RSG takes what it has


def test_a_toy_option_is_checked_at_load(tmp_path, toy_option):
    with pytest.raises(UserError, match="rsg.toy_sharpness' must be float"):
        tiny_config(tmp_path, ["rsg.toy_sharpness=sharp"])


def test_without_its_config_key_the_toy_option_is_refused(tmp_path):
    with pytest.raises(UserError, match="rsg.toy_sharpness' is unknown"):
        tiny_config(tmp_path, ["rsg.toy_sharpness=3"])


# -- names every other room reads from rsg/ ------------------------------------------------------------


def test_rsgs_statistics_and_mv_terms_are_read_from_rsg():
    assert SCALARS == tuple(SCALAR_DIAGNOSTICS) and PER_CLASS == tuple(CLASS_DIAGNOSTICS)
    assert {f"mv_{term}" for term in MV_TERMS} <= set(SCALAR_DIAGNOSTICS)
    assert len(RSGConfig().mv_terms) == len(MV_TERMS)
    assert RSG.loss_names == tuple(term.name for term in LOSS_TERMS)


def test_each_mv_term_has_its_computation():
    rsg = RSG(8, 4, [0], num_centers=2, contrastive_channels=8)
    x = [torch.randn(3, 8, 4, 4) for _ in range(4)]
    for name in MV_TERMS:
        assert torch.isfinite(rsg.mv_term(name, *x)), name


@pytest.mark.parametrize("generation", ["transform", "direct"])
def test_set_epoch_trains_what_the_phase_rule_says(generation):
    rsg = RSG(8, 4, [0], num_centers=2, contrastive_channels=8, threshold_epoch=2, generation=generation)
    for epoch in range(4):
        rsg.set_epoch(epoch)
        trained = {name for name in ("contrastive", "transform")
                   if all(p.requires_grad for p in getattr(rsg, name).parameters())}
        assert trained == trained_modules(epoch, 2, generation)


def test_the_optimizer_holds_every_rsg_parameter_in_every_phase(tmp_path):
    cfg = tiny_config(tmp_path)
    model = build_model(cfg, TINY_COUNTS, load_pretrained_weights=False)
    for epoch in (0, cfg.rsg.threshold_epoch):
        model.set_epoch(epoch)
        optimized = {id(p) for group in build_optimizer(cfg, model).param_groups for p in group["params"]}
        assert optimized == {id(p) for p in model.parameters()}
