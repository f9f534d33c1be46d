"""Which CIFAR subset each paper number came from, the configs that say it, and --subset.

Provenance (docs/REPRODUCTION.md, "Which CIFAR training subset each number came from"): the paper's RSG rows were trained with the authors' code (first
n_i per class); its baselines are Cao et al.'s published numbers (their shuffled subset).
"""

from __future__ import annotations

import os

import pytest

from engine.config import load_config
from tests.conftest import ROOT, run_script
from tools.table_index import get_table  # noqa: E402
from tools.table_spec import SUBSET_FACET, TABLES  # noqa: E402

CIFAR_TABLES = (1, 2, 3, 5, 6)


def subset_of(cell) -> str:
    return dict(cell.facets)[SUBSET_FACET]


@pytest.mark.slow
@pytest.mark.parametrize("number", CIFAR_TABLES)
def test_every_cifar_cell_config_states_the_subset_of_its_paper_number(number):
    for cell in get_table(number).cells:
        rsg = dict(cell.facets)["RSG"] == "w/"
        cfg = load_config(os.path.join(ROOT, cell.config))
        assert cfg.data.subset == subset_of(cell), cell.config
        assert cfg.data.subset_seed is None
        assert cfg.rsg.enabled == rsg
        if rsg:                                  # every RSG number of the paper: the authors' code
            assert subset_of(cell) == "first"


def test_the_copied_baselines_are_the_ones_on_cao_et_als_subset():
    """Table 1's and Table 2's w/o-RSG ResNet-32 numbers repeat Table 6's rho = 50 baselines (Cao et
    al.'s, cited [4], [6], [23]): exactly these cells are ldam_drw."""
    table6 = get_table(6)
    for number in (1, 2):
        for cell in get_table(number).cells:
            if subset_of(cell) != "ldam_drw":
                continue
            facets = dict(cell.facets)
            column = f"{facets['dataset']} {'LT' if facets['profile'] == 'long-tailed' else 'Step'} 50"
            same = [c for c in table6.cells if c.config == cell.config and c.column == column]
            assert len(same) == 1 and same[0].paper == cell.paper, cell
    copied = {cell.row for cell in table6.cells if subset_of(cell) == "ldam_drw"}
    assert copied == {"ERM", "Focal", "CB Focal", "CB RW", "M-DRW", "LDAM-DRW"}
    others = {dict(c.facets)["backbone"] for c in get_table(2).cells if dict(c.facets)["RSG"] == "w/o"
              and subset_of(c) == "first"}
    assert "ResNet-32" not in others and len(others) == 4      # the authors' own runs of other backbones


def test_large_scale_tables_have_no_cifar_subset():
    for number in set(TABLES) - set(CIFAR_TABLES):
        assert all(SUBSET_FACET not in dict(c.facets) for c in get_table(number).cells)


@pytest.mark.parametrize("rho", [100, 50])
def test_authors_variant_configs_of_table6(rho):
    cfg = load_config(os.path.join(ROOT, f"configs/cifar10_lt/ldam_drw_rsg_authors_r{rho}.yaml"))
    paper = load_config(os.path.join(ROOT, f"configs/cifar10_lt/ldam_drw_rsg_r{rho}.yaml"))
    assert cfg.rsg.variant == "authors" and paper.rsg.variant == "paper"
    assert cfg.optim.milestones == [159, 179] and paper.optim.milestones == [160, 180]
    # the code's DRW and generation still start at 160 (epoch > 159 there)
    assert (cfg.loss.reweight_start, cfg.rsg.threshold_epoch) == (160, 160)
    assert cfg.data.subset == "first" and cfg.data.imbalance_ratio == rho
    assert cfg.loss.name == "ldam" and cfg.loss.reweight == "drw"


@pytest.mark.slow
def test_subset_option_runs_a_whole_table_on_one_subset_apart(tmp_path):
    out = str(tmp_path / "runs")
    result = run_script("scripts/paper_tables.py", "--table", "1", "--dry-run", "--subset", "ldam_drw",
                        "--output-root", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 96
    for line in lines:
        assert line.endswith("data.subset=ldam_drw")
        assert f"output_dir={os.path.join(out, 'subset_ldam_drw')}/" in line
    default = run_script("scripts/paper_tables.py", "--table", "1", "--dry-run", "--output-root", out)
    assert "data.subset" not in default.stdout and "/subset_" not in default.stdout.replace(out, "")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--table", "6", "data.subset=first"], "use --subset"),
    (["--table", "7", "--subset", "first"], "CIFAR tables"),
])
def test_subset_refusals(args, message):
    result = run_script("scripts/paper_tables.py", *args, "--dry-run")
    assert result.returncode == 2 and message in result.stderr
