"""Every number of the config is checked when it loads, against the bounds declared beside its key
(shown in docs/CONFIG.md); RSG that could never generate is refused at load and by the plug-in; a
config file that is not text is one line."""

from __future__ import annotations

import dataclasses
import os
import typing

import pytest

from conftest import ROOT, error_lines, run_script
from core.errors import UserError
from core.registry import Bounds
from engine.config import Config, load_config
from rsg import RSG

RECIPE = os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_rsg_r100.yaml")


@pytest.mark.parametrize("override, message", [
    ("data.std=[0.2,0,0.2]", "key 'data.std' must hold numbers > 0, got [0.2, 0.0, 0.2]"),
    ("optim.weight_decay=-1", "key 'optim.weight_decay' must be >= 0, got -1"),
    ("data.crop_padding=-3", "key 'data.crop_padding' must be >= 0, got -3"),
    ("rsg.cesc_weight=-1", "key 'rsg.cesc_weight' must be >= 0, got -1"),
    ("optim.momentum=5", "key 'optim.momentum' must be in [0, 1), got 5"),
    ("data.mean=[0.5,.nan,0.5]", "key 'data.mean'[1] must be a finite number"),
    ("rsg.mv_weight=.nan", "key 'rsg.mv_weight' must be a finite number"),
    ("optim.lr=.inf", "key 'optim.lr' must be a finite number"),
    ("data.mean=[0.5,2,0.5]", "key 'data.mean' must hold numbers in [0, 1]"),
    ("train.seed=-1", "key 'train.seed' must be >= 0"),
    ("eval.taus=[0,-1]", "key 'eval.taus' must hold numbers >= 0"),
    ("optim.milestones=[-5,10]", "key 'optim.milestones' must hold numbers >= 0"),
    ("rsg.frequent_ratio=1", "key 'rsg.frequent_ratio' must be in (0, 1), got 1"),
])
def test_a_number_outside_its_bounds_is_one_line_naming_the_key(override, message):
    with pytest.raises(UserError) as error:
        load_config(RECIPE, [override])
    text = str(error.value)
    assert message in text and text.startswith("command line: key")
    assert "\n" not in text


def numeric(tp) -> bool:
    """int or float, optional or as the items of a list."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, list):
        return any(numeric(a) for a in args)
    return tp in (int, float)


def test_every_number_of_the_config_declares_its_bounds():
    """A new numeric key without bounds fails here: declare them with engine.config.within."""
    undeclared = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        undeclared += [f"{section.name}.{f.name}" for f in dataclasses.fields(cls)
                       if numeric(hints[f.name]) and not isinstance(f.metadata.get("bounds"), Bounds)]
    assert undeclared == []


def test_the_bounds_stand_in_the_config_reference():
    with open(os.path.join(ROOT, "docs/CONFIG.md")) as f:
        reference = f.read()
    assert "| `optim.momentum` | `0.9` | SGD momentum | in [0, 1) |" in reference
    assert "| `data.std` | `[0.2023, 0.1994, 0.201]` | per channel: (x - mean) / std | each > 0 |" in reference


@pytest.mark.parametrize("ratio, frequent", [(0.05, 0), (0.09, 0)])
def test_an_alpha_that_leaves_no_frequent_class_is_refused_at_load(ratio, frequent):
    with pytest.raises(UserError, match=rf"makes {frequent} frequent .* RSG could never generate"):
        load_config(RECIPE, [f"rsg.frequent_ratio={ratio}"])
    assert load_config(RECIPE, [f"rsg.frequent_ratio={ratio}", "rsg.enabled=false"]).rsg.enabled is False


@pytest.mark.parametrize("frequent", [[], list(range(4))])
def test_the_plug_in_refuses_a_split_that_leaves_a_side_empty(frequent):
    with pytest.raises(ValueError, match="can never generate"):
        RSG(8, 4, frequent, num_centers=2, contrastive_channels=4)


@pytest.mark.slow
@pytest.mark.parametrize("content", [os.urandom(256), "optim:\n  lr: 0.05  # café\n".encode("latin-1")])
def test_a_config_file_that_is_not_text_is_one_line(tmp_path, content):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    result = run_script("train.py", "--config", path, "--print-config")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "UTF-8" in lines[0]


@pytest.mark.slow
def test_a_directory_given_as_a_checkpoint_is_called_a_directory(tmp_path):
    result = run_script("eval.py", "--checkpoint", tmp_path)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "is a directory" in lines[0] and "not found" not in lines[0]
