"""The beyond tables (scripts/table_beyond.sh, table_beyond_imagenet.sh): their configs,
the runner's ordering of first and second stages, and the collector's RSG deltas, from generated
run folders (no training)."""

from __future__ import annotations

import csv
import os
import statistics

import pytest
from test_tables import fake_run, table_script

from conftest import ROOT
from engine.config import load_config
from tools import collect_results as collector
from tools.paper_tables import plan
from tools.run_layout import run_dir
from tools.table_index import get_table

STAGES = {"crt": "crt", "tau_norm": "tau_norm", "lws": "lws"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["beyond", "beyond_imagenet"])
def test_every_cell_config_sets_up_its_row(name):
    table = get_table(name)
    assert {(c.row, c.column) for c in table.cells} == {(r, c) for r in table.rows for c in table.columns}
    for cell in table.cells:
        cfg = load_config(os.path.join(ROOT, cell.config))
        rsg = dict(cell.facets)["RSG"] == "w/"
        if cell.parent is None:       # a first stage, or a loss: RSG on the cell itself
            assert cfg.stage.name == "none" and cfg.rsg.enabled == rsg
            continue
        parent = load_config(os.path.join(ROOT, cell.parent))
        assert cfg.rsg.enabled is False and parent.rsg.enabled == rsg      # RSG lives in the first stage
        assert cfg.stage.parent == os.path.join(parent.output_dir, "last.pt")   # where the parent trains by default
        assert (cfg.data.name, cfg.data.imbalance_ratio, cfg.data.subset, cfg.model.backbone) == (
            parent.data.name, parent.data.imbalance_ratio, parent.data.subset, parent.model.backbone)
        assert cfg.stage.name in cell.config
        if cfg.stage.name in ("crt", "lws"):
            assert cfg.data.sampler == "class_balanced" and cfg.loss.name == "ce" and cfg.optim.schedule == "cosine"
        else:
            assert cfg.train.epochs == 1


def test_beyond_cifar_rows_losses_and_published_numbers():
    table = get_table("beyond")
    assert len(table.configs()) == 5 * 8 and table.seeds == (0, 1, 2)
    expected = {"Logit-adjusted loss": "logit_adjusted", "Balanced softmax": "balanced_softmax", "ERM": "ce"}
    for cell in table.cells:
        if cell.row in expected:
            assert load_config(os.path.join(ROOT, cell.config)).loss.name == expected[cell.row]
    erm = get_table("beyond").cell("ERM", "CIFAR-100 LT 100 w/o RSG")
    assert erm.config == "configs/cifar100_lt/erm_r100.yaml" and erm.paper == get_table(6).cell(
        "ERM", "CIFAR-100 LT 100").paper
    published = {row: [table.cell(row, f"{d} LT {rho} w/o RSG").paper for d in ("CIFAR-10", "CIFAR-100")
                       for rho in (100, 50)] for row in table.rows}
    assert published == {"ERM": [29.64, 25.19, 61.68, 56.15], "Logit-adjusted loss": [22.11, None, 55.94, None],
                         "Balanced softmax": [22.46, 18.89, 57.01, 53.45], "cRT": [25.01, 19.83, 59.74, 54.64],
                         "tau-norm": [27.30, 20.22, 59.04, 54.31]}
    for source in ("Cao et al.", "Menon et al.'s official code", "Bag of Tricks"):      # every figure's source
        assert source in table.notes
    assert table.reference == "published" and get_table(6).reference == "paper"
    kang = get_table("beyond_imagenet")
    assert [kang.cell("cRT", c).paper for c in ("Many", "Medium", "Few", "All")] == [61.8, 46.2, 27.4, 49.6]
    assert kang.cell("cRT on ERM-RSG", "All").paper is None


@pytest.mark.slow
def test_runner_trains_first_stages_first_and_passes_the_same_seed_parent(tmp_path):
    jobs = plan(get_table("beyond"), (0, 1), str(tmp_path))
    position = {(job.config, job.seed): index for index, job in enumerate(jobs)}
    stages = [job for job in jobs if "stage.parent=" in " ".join(job.train)]
    assert len(stages) == 2 * 8 * 2
    for job in stages:
        parent = get_table("beyond").parents()[job.config]
        assert position[(parent, job.seed)] < position[(job.config, job.seed)]
        expected = f"stage.parent={os.path.join(run_dir(str(tmp_path), parent, job.seed), 'last.pt')}"
        assert expected in job.train
    # --cells naming a stage alone brings its first stage along.
    only = plan(get_table("beyond"), (0,), str(tmp_path), cells="*cifar10_lt/erm_rsg_crt_r50*")
    assert [job.config for job in only] == ["configs/cifar10_lt/erm_rsg_r50.yaml",
                                            "configs/beyond/cifar10_lt/erm_rsg_crt_r50.yaml"]
    result = table_script("_beyond", "--dry-run", "--seeds", "0", "stage.parent=x.pt")
    assert result.returncode == 2 and "stage.parent" in result.stderr


@pytest.mark.slow
def test_the_cifar_table_trains_every_run_on_one_subset(tmp_path):
    """Both sides of an RSG delta, and a stage with its first stage, on the same images: the runner
    puts every run of the table, the ERM first stages of Table 6 included, on the first n_i."""
    result = table_script("_beyond", "--dry-run", "--seeds", "0", "--output-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    commands = result.stdout.strip().splitlines()
    assert len(commands) == 40 and all("data.subset=first" in c for c in commands)
    root = os.path.join(str(tmp_path), "subset_first")
    assert all(f"output_dir={root}" in c for c in commands)
    stage = next(c for c in commands if "erm_rsg_crt_r50" in c)
    assert f"stage.parent={run_dir(root, 'configs/cifar10_lt/erm_rsg_r50.yaml', 0)}/last.pt" in stage


@pytest.mark.slow
def test_collector_reports_mean_std_published_and_rsg_delta(tmp_path):
    root = os.path.join(str(tmp_path), "subset_first")          # where the runner puts the table's runs
    values = {"configs/cifar10_lt/erm_r50.yaml": [25.0, 26.0, 27.0],        # errors 75/74/73 top-1
              "configs/cifar10_lt/erm_rsg_r50.yaml": [22.0, 23.0, 24.0],
              "configs/beyond/cifar10_lt/erm_crt_r50.yaml": [21.0, 22.0, 23.0],
              "configs/beyond/cifar10_lt/erm_rsg_crt_r50.yaml": [20.0, 20.5, 21.0]}
    for config, errors in values.items():
        table = get_table("beyond")
        parent = table.parents().get(config)
        for seed, error in enumerate(errors):
            overrides = [f"stage.parent={run_dir(root, parent, seed)}/last.pt"] if parent else []
            fake_run(run_dir(root, config, seed), config, seed, [100.0 - error],
                     overrides=overrides + ["data.subset=first"])
    # A run of the same config on its own subset (Table 6's, not this table's) is not this table's.
    fake_run(run_dir(str(tmp_path), "configs/cifar10_lt/erm_r50.yaml", 0), "configs/cifar10_lt/erm_r50.yaml", 0,
             [10.0])
    (table, seeds, results), = collector.collect([get_table("beyond")], str(tmp_path))[0]
    by = {(r.cell.row, r.cell.column): r for r in results}
    crt = by[("cRT", "CIFAR-10 LT 50 w/ RSG")]
    assert crt.mean == pytest.approx(20.5) and crt.std == pytest.approx(statistics.stdev([20.0, 20.5, 21.0]))
    assert not crt.differs                                  # the parent override is where it ran, not what
    assert crt.rsg_delta == pytest.approx(20.5 - 22.0)
    erm = by[("ERM", "CIFAR-10 LT 50 w/ RSG")]
    assert erm.rsg_delta == pytest.approx(23.0 - 26.0) and erm.diff == pytest.approx(23.0 - 20.25)
    assert by[("ERM", "CIFAR-10 LT 50 w/o RSG")].rsg_delta is None
    text = collector.format_text(table, results, seeds)
    assert "RSG Δ" in text and "-1.50" in text and "-3.00" in text
    markdown, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    assert collector.main([str(tmp_path), "--table", "beyond", "--markdown", str(markdown), "--csv",
                           str(csv_path)]) == 0
    assert "RSG Δ -1.50" in markdown.read_text() and "scripts/table_beyond.sh" in markdown.read_text()
    rows = {(r["row"], r["column"]): r for r in csv.DictReader(open(csv_path))}
    assert rows[("cRT", "CIFAR-10 LT 50 w/ RSG")]["rsg_delta"] == "-1.5000"
