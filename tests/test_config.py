"""The typed config: `_base_` inheritance, dotted overrides, error messages, train.py's CLI."""

from __future__ import annotations

import glob
import importlib
import os

import pytest
import yaml

import train as train_script
from conftest import ROOT, error_lines, run_script
from core.errors import UserError
from engine.config import REGISTRIES, Config, config_from_dict, config_to_dict, dump_config, load_config

# Every YAML under configs/, the _base_ fragments included (they load on their own too) ...
ALL_CONFIGS = sorted(os.path.relpath(path, ROOT)
                     for path in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
# ... and the runnable ones: no _base_ fragments.
CONFIG_FILES = [path for path in ALL_CONFIGS if os.sep + "_base_" + os.sep not in os.sep + path]


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------
# _base_ inheritance


def test_base_inheritance_child_overrides_one_key(tmp_path):
    write(tmp_path / "base.yaml", "optim:\n  lr: 0.2\n  momentum: 0.8\ntrain:\n  epochs: 7\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\noptim:\n  lr: 0.05\n")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.05            # the child's value
    assert cfg.optim.momentum == 0.8       # the rest of the section comes from the base
    assert cfg.train.epochs == 7
    assert cfg.optim.weight_decay == 2e-4  # untouched keys keep the dataclass default
    assert cfg.name == "child"


def test_base_list_later_bases_win_and_relative_paths(tmp_path):
    write(tmp_path / "bases" / "a.yaml", "optim:\n  lr: 0.3\ndata:\n  batch_size: 16\n")
    write(tmp_path / "bases" / "b.yaml", "optim:\n  lr: 0.4\nrsg:\n  enabled: false\n")
    # a base that itself has a base, relative to its own folder
    write(tmp_path / "bases" / "c.yaml", "_base_: deeper/d.yaml\ntrain:\n  seed: 5\n")
    write(tmp_path / "bases" / "deeper" / "d.yaml", "train:\n  epochs: 9\n  seed: 1\n")
    child = write(tmp_path / "exp" / "run.yaml",
                  "_base_: [../bases/a.yaml, ../bases/b.yaml, ../bases/c.yaml]\ndata:\n  num_workers: 1\n")
    cfg = load_config(child)
    assert cfg.optim.lr == 0.4           # b comes after a
    assert cfg.data.batch_size == 16     # only in a
    assert cfg.rsg.enabled is False      # only in b
    assert cfg.train.epochs == 9         # from c's base, two levels down
    assert cfg.train.seed == 5           # c overrides its own base
    assert cfg.data.num_workers == 1


def test_base_cycle_is_a_user_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_missing_base_names_the_file(tmp_path):
    child = write(tmp_path / "child.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_config(child)


def test_repository_configs_inherit_the_recipe():
    cfg = load_config(os.path.join(ROOT, "configs/cifar10_step/ldam_drw_r50.yaml"))
    # ldam_drw_r50 <- ldam_drw_rsg_r50 <- cifar_recipe + step
    assert cfg.rsg.enabled is False
    assert cfg.data.profile == "step"
    assert cfg.data.imbalance_ratio == 50.0
    assert cfg.rsg.frequent_ratio == 0.5 and cfg.rsg.transfer_strength == 0.01
    assert cfg.optim.milestones == [160, 180] and cfg.train.epochs == 200


# ---------------------------------------------------------------------------------------------
# Overrides


def test_overrides_are_yaml_typed(tmp_path):
    path = write(tmp_path / "x.yaml", "optim:\n  lr: 0.1\n")
    cfg = load_config(path, ["optim.lr=0.05", "rsg.enabled=false", "optim.milestones=[1,2]",
                             "train.epochs=3", "data.name=digits", "data.subset_seed=null"])
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.rsg.enabled is False
    assert cfg.optim.milestones == [1, 2] and all(type(m) is int for m in cfg.optim.milestones)
    assert cfg.train.epochs == 3 and type(cfg.train.epochs) is int
    assert cfg.data.name == "digits"
    assert cfg.data.subset_seed is None


def test_int_is_accepted_for_a_float_key(tmp_path):
    cfg = load_config(write(tmp_path / "x.yaml", ""), ["optim.lr=1"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_float_key_accepts_exponent_without_dot(tmp_path):
    cfg = load_config(write(tmp_path / "x.yaml", "optim:\n  weight_decay: 5e-4\n"), ["optim.lr=1e-3"])
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.weight_decay == pytest.approx(5e-4)


def test_override_without_equals_sign(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        load_config(write(tmp_path / "x.yaml", ""), ["optim.lr"])


# ---------------------------------------------------------------------------------------------
# Errors name the key, the file and what is allowed


def test_unknown_key_in_file_names_key_file_and_valid_keys(tmp_path):
    path = write(tmp_path / "typo.yaml", "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert "optim.learning_rate" in message
    assert path in message
    for valid in ("lr", "momentum", "weight_decay", "warmup_epochs", "milestones", "decay"):
        assert valid in message


def test_unknown_key_inherited_from_base_names_the_base_file(tmp_path):
    base = write(tmp_path / "base.yaml", "train:\n  epoch: 3\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(UserError) as info:
        load_config(child)
    assert "train.epoch" in str(info.value) and base in str(info.value)
    assert "epochs" in str(info.value)


def test_unknown_override_names_command_line(tmp_path):
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path / "x.yaml", ""), ["bad.key=1"])
    message = str(info.value)
    assert "'bad.key'" in message and "command line" in message
    for section in ("data", "model", "rsg", "loss", "optim", "train", "output_dir"):
        assert section in message


@pytest.mark.parametrize("override, key", [
    ("optim.lr=abc", "optim.lr"),
    ("train.epochs=1.5", "train.epochs"),
    ("rsg.enabled=3", "rsg.enabled"),
    ("optim.milestones=5", "optim.milestones"),
    ("train.device=[1]", "train.device"),
])
def test_wrong_type_names_the_key(tmp_path, override, key):
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path / "x.yaml", ""), [override])
    assert f"'{key}'" in str(info.value)
    assert "must be" in str(info.value)


def test_wrong_type_in_file_names_file(tmp_path):
    path = write(tmp_path / "x.yaml", "train:\n  epochs: many\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert "'train.epochs'" in str(info.value) and path in str(info.value) and "int" in str(info.value)


@pytest.mark.parametrize("key, registry", sorted(REGISTRIES.items()))
def test_a_registered_key_lists_its_registry(tmp_path, key, registry):
    """The registry is the only list of a key's names: a bad one names the key, where it was set
    and every registered name."""
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path / "x.yaml", ""), [f"{key}=foo"])
    message = str(info.value)
    assert f"'{key}'" in message and "'foo'" in message and "command line" in message
    assert message.endswith("valid choices: " + ", ".join(registry.names()))
    section, name = key.split(".")
    path = write(tmp_path / "y.yaml", f"{section}:\n  {name}: svhn\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert path in str(info.value) and f"'{key}'" in str(info.value)


@pytest.mark.parametrize("override", ["data.name=cifar1000", "data.sampler=drss", "loss.name=ldma",
                                      "model.backbone=resnt32", "rsg.position=stage4"])
def test_print_config_with_a_bad_name_exits_2_with_one_line(override, capsys):
    assert train_script.main(["--config", os.path.join(ROOT, "configs/quickstart.yaml"), "--print-config",
                              override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and override.split("=")[0] in err[0]
    assert "valid choices:" in err[0]


def test_the_registries_hold_the_names_the_configs_use():
    assert {"cifar10", "cifar100", "digits", "image_folder", "imagenet_lt", "places_lt", "inat2018",
            "split_list"} == set(REGISTRIES["data.name"].names())
    assert {"shuffle", "drs", "class_balanced"} == set(REGISTRIES["data.sampler"].names())
    assert {"ce", "ldam", "focal", "am", "logit_adjusted", "balanced_softmax"} == set(REGISTRIES["loss.name"].names())
    assert {"resnet32", "resnet56", "resnet110", "densenet40", "resnext29_8x64d", "resnet50", "resnet152",
            "resnext50_32x4d"} == set(REGISTRIES["model.backbone"].names())


@pytest.mark.parametrize("backbone", sorted(REGISTRIES["model.backbone"].names()))
def test_rsg_position_is_checked_against_the_backbones_stages(tmp_path, backbone):
    stages = REGISTRIES["model.backbone"].info(backbone)["stages"]
    for stage in stages:
        assert load_config(write(tmp_path / "x.yaml", ""), [f"model.backbone={backbone}",
                                                            f"rsg.position={stage}"]).rsg.position == stage
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path / "x.yaml", ""), [f"model.backbone={backbone}", "rsg.position=stage9"])
    assert str(info.value) == (f"key 'rsg.position' is 'stage9', not a stage of {backbone}; valid choices: "
                               f"default, {', '.join(stages)}")


def test_section_set_as_value_and_value_as_section(tmp_path):
    with pytest.raises(UserError, match="section"):
        load_config(write(tmp_path / "x.yaml", "optim: 3\n"))
    with pytest.raises(UserError, match="'train.epochs.value'"):
        load_config(write(tmp_path / "y.yaml", ""), ["train.epochs.value=3"])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"),
    ("optim.milestones=[5,2]", "optim.milestones"),
    ("optim.lr=-0.1", "optim.lr"),
    ("rsg.frequent_ratio=0", "rsg.frequent_ratio"),
    ("data.imbalance_ratio=0.5", "data.imbalance_ratio"),
    ("train.device=tpu", "train.device"),
    ("train.eval_every=0", "train.eval_every"),
    ("train.log_every=0", "train.log_every"),
    ("train.eval_every_epoch_from=-1", "train.eval_every_epoch_from"),
])
def test_range_checks(tmp_path, override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path / "x.yaml", ""), [override])


def test_a_contrastive_module_without_channels_is_refused_at_load(tmp_path):
    """The RSG plug-in refuses it with a ValueError; the config says so before any folder is made."""
    with pytest.raises(UserError, match=r"key 'rsg\.contrastive_channels' must be >= 1"):
        load_config(write(tmp_path / "x.yaml", ""), ["rsg.contrastive_channels=0"])


def test_a_negative_threshold_epoch_is_refused_at_load(tmp_path):
    """T_th < 0 would generate from the first epoch, as T_th = 0 does: a typo, not a setting."""
    with pytest.raises(UserError, match=r"key 'rsg\.threshold_epoch' must be >= 0"):
        load_config(write(tmp_path / "x.yaml", ""), ["rsg.threshold_epoch=-1"])


@pytest.mark.parametrize("taus", ["[1.0, .nan]", "[1.0, .inf]"])
def test_a_tau_that_is_not_a_finite_number_is_refused_at_load(tmp_path, taus):
    """A NaN tau makes every adjusted logit NaN; the reported tau would be chosen among NaNs."""
    with pytest.raises(UserError, match=r"key 'eval\.taus'\[1\] must be a finite number"):
        load_config(write(tmp_path / "x.yaml", ""), [f"eval.taus={taus}", "eval.posthoc=logit_adjust"])


def test_a_key_given_twice_in_one_mapping_is_refused_with_both_lines(tmp_path):
    """YAML loaders keep the last value silently; which one trains would depend on reading order."""
    text = "optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n"
    with pytest.raises(UserError, match=r"x\.yaml: .*line 4.*'lr'.*line 2"):
        load_config(write(tmp_path / "x.yaml", text))


def test_not_a_mapping_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "optim: [1, 2\n"))
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "absent.yaml"))


# ---------------------------------------------------------------------------------------------
# Names, output_dir, round trips


def test_default_output_dir_is_runs_config_name():
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"))
    assert cfg.name == "quickstart"
    assert cfg.output_dir == os.path.join("runs", "quickstart")


def test_name_and_output_dir_can_be_set(tmp_path):
    path = write(tmp_path / "exp.yaml", "")
    assert load_config(path, ["name=other"]).output_dir == os.path.join("runs", "other")
    assert load_config(path, [f"output_dir={tmp_path}/out"]).output_dir == f"{tmp_path}/out"


@pytest.mark.slow
def test_repository_configs_have_distinct_default_output_dirs():
    output_dirs = {}
    for path in CONFIG_FILES:
        output_dirs.setdefault(load_config(os.path.join(ROOT, path)).output_dir, []).append(path)
    shared = {d: paths for d, paths in output_dirs.items() if len(paths) > 1}
    assert not shared


def test_config_dict_round_trip(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs/quickstart.yaml"), ["optim.lr=0.07", "data.subset_seed=3"])
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert config_to_dict(again)["optim"]["lr"] == 0.07
    # overrides apply on top of a stored config, and are checked the same way
    assert config_from_dict(config_to_dict(cfg), ["model.backbone=resnet56"]).model.backbone == "resnet56"
    with pytest.raises(UserError, match="'optim.lrr'"):
        config_from_dict(config_to_dict(cfg), ["optim.lrr=1"])


def test_config_files_are_found():
    # the parametrized tests below cover every config; make sure the glob sees them
    assert "configs/quickstart.yaml" in CONFIG_FILES
    assert "configs/cifar10_lt/ldam_drw_rsg_r100.yaml" in CONFIG_FILES
    assert "configs/cifar10_lt/erm_r100.yaml" in CONFIG_FILES
    assert not any("_base_" in path for path in CONFIG_FILES)
    assert len(CONFIG_FILES) >= 17
    assert len([p for p in CONFIG_FILES if p.startswith("configs/cifar")]) >= 4 * 31
    assert "configs/_base_/methods/m_drw.yaml" in ALL_CONFIGS
    assert set(CONFIG_FILES) < set(ALL_CONFIGS)


def first_of_each_folder_fast(paths):
    """`paths` as parameters: the first config of each folder stays in the fast subset, the others
    are marked slow (each takes a few hundredths of a second, all of them together 10-20 s)."""
    folders = set()
    params = []
    for path in paths:
        folder = os.path.dirname(path)
        params.append(path if folder not in folders else pytest.param(path, marks=pytest.mark.slow))
        folders.add(folder)
    return params


@pytest.mark.parametrize("path", first_of_each_folder_fast(ALL_CONFIGS))
def test_every_config_loads_and_prints(path, capsys):
    """Every config, _base_ fragments included, loads, and train.py's --print-config (its main(), in
    this process: a subprocess per config would be slow) prints YAML that rebuilds the same config."""
    cfg = load_config(os.path.join(ROOT, path))
    assert isinstance(cfg, Config)
    assert cfg.name == os.path.splitext(os.path.basename(path))[0]
    assert train_script.main(["--config", os.path.join(ROOT, path), "--print-config"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    printed = yaml.safe_load(captured.out)
    assert config_from_dict(printed) == cfg


# ---------------------------------------------------------------------------------------------
# train.py on the command line


class Parsed(Exception):
    """Stands in for load_config: the entry point parsed its command line this far."""


def parsed_overrides(path, overrides):
    raise Parsed(overrides)


INTERMIXED = ["a=1", "--config", "x.yaml", "b=2"]


@pytest.mark.parametrize("entry_point", ["train", "eval", "tools.rsg_pair", "tools.paper_tables", "tools.benchmark",
                                         "tools.model_info", "tools.profile_step"])
def test_overrides_may_stand_on_both_sides_of_an_option(entry_point, monkeypatch):
    """`train.py a=1 --config X b=2` is `train.py --config X a=1 b=2`; argparse alone said
    "unrecognized arguments: b=2" of an override like the first."""
    module = importlib.import_module(entry_point)
    argv = {"eval": ["a=1", "--checkpoint", "x.pt", "b=2"], "tools.paper_tables": ["a=1", "--table", "1", "b=2"]}
    if hasattr(module, "parse_args"):
        assert module.parse_args(argv.get(entry_point, INTERMIXED)).overrides == ["a=1", "b=2"]
        return
    monkeypatch.setattr(module, "load_config", parsed_overrides)
    with pytest.raises(Parsed) as parsed:
        module.main(INTERMIXED)
    assert parsed.value.args[0] == ["a=1", "b=2"]


@pytest.mark.parametrize("argv, named", [
    (["--config", "x.yaml", "--o"], "--o"),             # a prefix of --overwrite: it would delete a run
    (["--config", "x.yaml", "--resum", "auto"], "--resum"),
    (["--config", "x.yaml", "--foo"], "--foo"),
    (["--resume", "auto"], "--config"),
])
def test_an_option_is_taken_only_as_spelled_and_a_bad_one_is_one_line(argv, named, capsys):
    assert importlib.import_module("train").main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0] and "--help" in lines[0], lines


@pytest.mark.slow
def test_train_cli_bad_key_exits_2_with_one_error_line():
    result = run_script("train.py", "--config", "configs/quickstart.yaml", "bad.key=1", timeout=60)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "bad.key" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_train_cli_missing_config_exits_2(tmp_path):
    result = run_script("train.py", "--config", str(tmp_path / "none.yaml"), timeout=60)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "none.yaml" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["configs/quickstart.yaml", "configs/cifar10_lt/ldam_drw_rsg_r100.yaml"])
def test_train_cli_print_config_subprocess(path):
    result = run_script("train.py", "--config", path, "--print-config", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert config_from_dict(yaml.safe_load(result.stdout)) == load_config(path)


@pytest.mark.slow
def test_train_cli_print_config_applies_overrides():
    result = run_script("train.py", "--config", "configs/quickstart.yaml", "--print-config",
                        "optim.lr=0.05", "rsg.enabled=false", "optim.milestones=[1,2]", timeout=60)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["lr"] == 0.05
    assert printed["rsg"]["enabled"] is False
    assert printed["optim"]["milestones"] == [1, 2]
    assert printed["output_dir"] == os.path.join("runs", "quickstart")
    assert config_from_dict(printed) == load_config("configs/quickstart.yaml",
                                                    ["optim.lr=0.05", "rsg.enabled=false",
                                                     "optim.milestones=[1,2]"])
