"""Every config loads through train.py, and every cell of Tables 1, 3, 5 and 6 listed in
docs/REPRODUCTION.md names a config that exists and sets up that cell (issue 3)."""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

import train
from conftest import ROOT
from engine.config import config_from_dict, load_config
from models import classifier_kind

ALL_CONFIGS = sorted(os.path.relpath(path, ROOT)
                     for path in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))

# Rows per table: Table 1: 4 losses x w/o, w/ RSG x 4 datasets; Table 3: 6 rows x 4; Table 5: 3 x 4;
# Table 6: 7 methods x 8 columns.
TABLE_ROWS = {"1": 32, "3": 24, "5": 12, "6": 56}

DATASETS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100"}
PROFILES = {"long-tailed": "longtail", "step": "step"}

# method prefix of a cell file -> (loss.name, loss.reweight, data.sampler)
METHODS = {
    "erm": ("ce", "none", "shuffle"),
    "focal": ("focal", "none", "shuffle"),
    "cb_focal": ("focal", "cb", "shuffle"),
    "cb_rw": ("ce", "cb", "shuffle"),
    "m_drw": ("am", "drw", "shuffle"),
    "ldam_drw": ("ldam", "drw", "shuffle"),
    "ldam_drs": ("ldam", "none", "drs"),
}
CELL_NAME = re.compile(r"^(?P<method>" + "|".join(sorted(METHODS, key=len, reverse=True)) +
                       r")(?P<rsg>_rsg)?(?P<ablation>_\w+?)?_r(?P<rho>50|100)$")


# ---------------------------------------------------------------------------------------------
# Every config loads


def test_the_glob_sees_the_table_configs():
    assert "configs/cifar10_lt/erm_r100.yaml" in ALL_CONFIGS
    assert "configs/_base_/methods/m_drw.yaml" in ALL_CONFIGS
    assert len([p for p in ALL_CONFIGS if p.startswith("configs/cifar")]) >= 4 * 31


@pytest.mark.parametrize("path", ALL_CONFIGS)
def test_config_prints_through_train_main(path, capsys):
    assert train.main(["--config", os.path.join(ROOT, path), "--print-config"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert config_from_dict(yaml.safe_load(captured.out)) == load_config(os.path.join(ROOT, path))


# ---------------------------------------------------------------------------------------------
# The cells of docs/REPRODUCTION.md


def table_rows() -> dict[str, list[dict]]:
    """{table: [row]} with each row's dataset, profile, rho, method, rsg, config, output_dir, paper."""
    with open(os.path.join(ROOT, "docs", "REPRODUCTION.md")) as f:
        text = f.read()
    tables = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        match = re.match(r"Table (\d+) ", section)
        if not match or match.group(1) not in TABLE_ROWS:
            continue
        rows = []
        for line in section.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            command = re.search(r"--config (\S+) output_dir=(\S+?)`", line)
            if len(cells) < 8 or not command:
                continue
            rows.append({"dataset": cells[0], "profile": cells[1], "rho": float(cells[2]), "method": cells[3],
                         "rsg": cells[4] == "w/", "config": command.group(1), "output_dir": command.group(2),
                         "paper": cells[6]})
        tables[match.group(1)] = rows
    return tables


TABLES = table_rows()
ROWS = [(table, row) for table, rows in sorted(TABLES.items()) for row in rows]


def test_every_table_is_listed_with_all_its_cells():
    assert {table: len(rows) for table, rows in TABLES.items()} == TABLE_ROWS
    for table, rows in TABLES.items():
        cells = {(r["dataset"], r["profile"], r["rho"], r["method"], r["rsg"]) for r in rows}
        assert len(cells) == len(rows), f"Table {table} lists a cell twice"
        assert all(re.fullmatch(r"\d+\.\d\d", r["paper"]) for r in rows)


def test_one_output_dir_per_config():
    by_config = {}
    for _, row in ROWS:
        by_config.setdefault(row["config"], set()).add(row["output_dir"])
    assert all(len(dirs) == 1 for dirs in by_config.values())
    output_dirs = [dirs.pop() for dirs in by_config.values()]
    assert len(set(output_dirs)) == len(output_dirs)


@pytest.mark.parametrize("table, row", ROWS, ids=[f"table{t}-{r['config']}" for t, r in ROWS])
def test_table_cell_config_exists_and_sets_up_the_cell(table, row):
    path = os.path.join(ROOT, row["config"])
    assert os.path.isfile(path), f"Table {table}: {row['config']} does not exist"
    cfg = load_config(path)
    assert cfg.data.name == DATASETS[row["dataset"]]
    assert cfg.data.profile == PROFILES[row["profile"]]
    assert cfg.data.imbalance_ratio == row["rho"]
    assert cfg.rsg.enabled == row["rsg"]
    assert cfg.model.backbone == "resnet32"
    name = CELL_NAME.match(os.path.splitext(os.path.basename(path))[0])
    assert name and (name.group("rsg") is not None) == row["rsg"]
    assert (cfg.loss.name, cfg.loss.reweight, cfg.data.sampler) == METHODS[name.group("method")]
    assert row["output_dir"] == "runs/" + os.path.splitext(row["config"])[0].removeprefix("configs/")


# ---------------------------------------------------------------------------------------------
# What every cell file shares: the recipe, the profile's alpha and beta, the method's settings


CELL_CONFIGS = sorted(p for p in ALL_CONFIGS if re.match(r"configs/cifar100?_(lt|step)/", p))


@pytest.mark.parametrize("path", CELL_CONFIGS)
def test_cell_file_follows_the_recipe_and_its_name(path):
    cfg = load_config(os.path.join(ROOT, path))
    folder, name = path.split("/")[1], os.path.splitext(os.path.basename(path))[0]
    parts = CELL_NAME.match(name)
    assert parts, f"{name} does not name a method, RSG and rho"
    assert cfg.data.name == folder.split("_")[0]
    assert cfg.data.imbalance_ratio == float(parts.group("rho"))
    assert cfg.rsg.enabled == (parts.group("rsg") is not None)
    alpha_beta = (0.2, 1.0) if folder.endswith("_lt") else (0.5, 0.01)
    assert cfg.data.profile == ("longtail" if folder.endswith("_lt") else "step")
    assert (cfg.rsg.frequent_ratio, cfg.rsg.transfer_strength) == alpha_beta
    assert (cfg.train.epochs, cfg.optim.lr, cfg.optim.milestones, cfg.data.batch_size) == (200, 0.1, [160, 180], 128)
    assert cfg.rsg.threshold_epoch == cfg.loss.reweight_start == cfg.data.resample_start == 160
    method = parts.group("method")
    assert (cfg.loss.name, cfg.loss.reweight, cfg.data.sampler) == METHODS[method]
    assert classifier_kind(cfg) == ("cosine" if cfg.loss.name in ("am", "ldam") else "linear")
    if cfg.loss.name == "focal":
        assert cfg.loss.focal_gamma == 1.0
    if method == "m_drw":
        assert (cfg.loss.max_margin, cfg.loss.scale) == (0.35, 30.0)
    if method.startswith("ldam"):
        assert (cfg.loss.max_margin, cfg.loss.scale) == (0.5, 30.0)
