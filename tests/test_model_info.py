"""scripts/model_info.py: evaluation parameters and cost equal the plain model's (RSG adds nothing)."""

from __future__ import annotations

import os

import pytest

from conftest import ROOT, run_script
from engine.config import load_config
from models import build_model
from tools import model_info

RECIPE = os.path.join(ROOT, "configs/cifar10_lt/ldam_drw_rsg_r50.yaml")




@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet32", "densenet40"])
def test_evaluation_figures_equal_the_plain_model(backbone):
    info = model_info.model_info(load_config(RECIPE, [f"model.backbone={backbone}"]), 10)
    plain_cfg = load_config(RECIPE, [f"model.backbone={backbone}", "rsg.enabled=false"])
    plain_info = model_info.model_info(plain_cfg, 10)
    plain = build_model(plain_cfg, list(range(10, 0, -1)))
    assert info["eval_parameters"] == model_info.count_parameters(plain) == plain_info["train_parameters"]
    assert info["eval_macs"] == model_info.macs_per_image(plain, 32) == plain_info["eval_macs"]
    assert info["train_parameters"] == info["eval_parameters"] + info["rsg_parameters"] > info["eval_parameters"]
    assert plain_info["rsg_parameters"] == 0


def test_resnet32_cost_is_the_known_figure():
    info = model_info.model_info(load_config(RECIPE), 10)
    assert info["rsg_position"] == "stage3" and info["rsg_input"] == (32, 16, 16)
    assert 68e6 < info["eval_macs"] < 71e6              # ResNet-32: about 0.07 GMACs at 32 px


@pytest.mark.slow
def test_script_prints_both_parameter_counts():
    result = run_script("scripts/model_info.py", "--config", RECIPE, "--markdown")
    assert result.returncode == 0, result.stderr
    assert "training (with RSG)" in result.stdout and "evaluation (no RSG): 0.46M" in result.stdout
    assert "GMACs" in result.stdout and result.stdout.strip().splitlines()[-1].startswith("| resnet32 |")


@pytest.mark.slow
def test_script_needs_the_class_count_for_other_data(capsys):
    folder = os.path.join(ROOT, "configs/image_folder/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml")
    assert model_info.main(["--config", folder]) == 2
    assert "--num-classes" in capsys.readouterr().err
    assert model_info.main(["--config", folder, "--num-classes", "7"]) == 0
    assert "7 classes" in capsys.readouterr().out
