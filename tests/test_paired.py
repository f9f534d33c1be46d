"""The paired design: scripts/rsg_pair.py end to end on a tiny run, `paper_tables.py --paired`, the
collector's per-seed differences of w/o-vs-w/ RSG cells, and the diagnostics figure."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys

import pytest
from test_tables import fake_run

import train as train_script
from conftest import ROOT, SCRIPT_ENV, run_script, tiny_config_dict, write_config
from engine.branch import BRANCH_FILE
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from tools import collect_results as collector
from tools import pair_report, plot_rsg_diagnostics, rsg_pair
from tools.pair_plan import pair_commands
from tools.paper_tables import plan_paired
from tools.run_layout import SHARED_STAGE_SUFFIX, pair_folders
from tools.table_index import get_table

SECTIONS = dict(train={"epochs": 3, "eval_every": 1}, rsg={"threshold_epoch": 2}, loss={"reweight_start": 2},
                optim={"lr": 0.05, "warmup_epochs": 1, "milestones": [2], "decay": 0.1})


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """`rsg_pair.py` over seed 0 of a tiny RSG config: shared stage (2 epochs) and two branches (1 each)."""
    tmp = tmp_path_factory.mktemp("pair")
    config = write_config(tmp / "tiny_rsg.yaml", tiny_config_dict(tmp / "unused", **SECTIONS))
    result = run_script("scripts/rsg_pair.py", "--config", config, "--seeds", "0", "--output-root", tmp / "runs",
                        timeout=400)
    return {"tmp": tmp, "config": config, "result": result,
            "folders": pair_folders(str(tmp / "runs"), config, 0)}


@pytest.mark.slow
def test_pair_runs_a_shared_stage_and_two_branches(pair_run):
    result, folders = pair_run["result"], pair_run["folders"]
    assert result.returncode == 0, result.stderr[-3000:]
    shared = load_checkpoint(os.path.join(folders["shared"], "threshold.pt"))
    assert shared["epoch"] == 2 and shared["config"]["name"].endswith(SHARED_STAGE_SUFFIX)
    with_rsg = load_checkpoint(os.path.join(folders["with_rsg"], "last.pt"))
    without = load_checkpoint(os.path.join(folders["without_rsg"], "last.pt"))
    assert with_rsg["epoch"] == without["epoch"] == 3
    assert any(k.startswith("rsg.") for k in with_rsg["model"]) and not any(k.startswith("rsg.") for k in without["model"])
    records = [json.load(open(os.path.join(folders[b], BRANCH_FILE))) for b in ("with_rsg", "without_rsg")]
    assert records[0]["sha256"] == records[1]["sha256"] and records[0]["epoch"] == 2
    # the summary: one line for seed 0 with both branches' numbers and the difference
    seed_line = next(line for line in result.stdout.splitlines() if line.startswith("   0 "))
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", seed_line)]
    errors = [100 - json.loads(open(os.path.join(folders[b], "metrics.jsonl")).readlines()[-1])["test"]["top1"]
              for b in ("without_rsg", "with_rsg")]
    assert len(numbers) == 9           # error, medium, few of each and of the difference (no many-shot class)
    assert numbers[0] == pytest.approx(errors[0], abs=0.01) and numbers[3] == pytest.approx(errors[1], abs=0.01)
    assert numbers[6] == pytest.approx(errors[1] - errors[0], abs=0.01)
    assert f"{errors[1] - errors[0]:+.2f}" in result.stdout.splitlines()[-2]   # the mean line (one seed)


@pytest.mark.slow
def test_a_finished_pair_is_not_run_again(pair_run):
    result = run_script("scripts/rsg_pair.py", "--config", pair_run["config"], "--seeds", "0", "--output-root",
                        pair_run["tmp"] / "runs", "--dry-run")
    assert result.returncode == 0 and result.stdout.strip() == ""


@pytest.mark.slow
def test_the_diagnostics_figure_of_a_branch(pair_run):
    folders = pair_run["folders"]
    out = pair_run["tmp"] / "fig.png"
    result = run_script("scripts/plot_rsg_diagnostics.py", folders["with_rsg"], folders["without_rsg"],
                        "--out", out, timeout=200)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000
    assert os.listdir(os.path.join(folders["with_rsg"], "tensorboard"))
    # the loss panels are on a log scale: their terms differ by orders of magnitude
    figure, _ = plot_rsg_diagnostics.diagnostics_figure(folders["with_rsg"], folders["without_rsg"])
    scales = {axis.get_title(): axis.get_yscale() for axis in figure.axes if axis.get_title()}
    assert scales["L_CESC terms (Eq. 5), log scale"] == scales["L_MV terms (Eq. 6), log scale"] == "log"
    assert scales["mean channel norm per position"] == "linear"


@pytest.mark.slow
def test_report_reads_rsg_internals_without_running_anything(pair_run):
    result = run_script("scripts/rsg_pair.py", "--config", pair_run["config"], "--seeds", "0", "--output-root",
                        pair_run["tmp"] / "runs", "--report", "--diagnostics")
    assert result.returncode == 0, result.stderr
    assert "[seed" not in result.stdout and "wall time" not in result.stdout       # nothing ran
    shared = next(line for line in result.stdout.splitlines() if line.startswith("seed 0, shared stage (2 epochs)"))
    assert "centers used per class" in shared and "always 'different' would score" in shared
    branch = next(line for line in result.stdout.splitlines() if line.startswith("seed 0, with-RSG branch (1 epochs"))
    assert "L_MV direction" in branch and "spread of generated" in branch
    per_class = result.stdout.splitlines()[-1]
    finals = [json.loads(open(os.path.join(pair_run["folders"][b], "metrics.jsonl")).readlines()[-1])["test_per_class"]
              for b in ("with_rsg", "without_rsg")]
    assert per_class == "seed 0: " + " ".join(f"{a - b:+.1f}" for a, b in zip(*finals))


def test_the_t_quantile_is_the_table_to_30_dof_and_the_published_values_beyond():
    assert [pair_report.t_quantile_975(n) for n in (1, 2, 3, 30)] == [12.706, 4.303, 3.182, 2.042]
    for dof, published in ((40, 2.021), (60, 2.000), (120, 1.980)):
        assert pair_report.t_quantile_975(dof) == pytest.approx(published, abs=1e-3)
    assert pair_report.t_quantile_975(10 ** 6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="at least 1"):
        pair_report.t_quantile_975(0)


def test_the_report_gives_the_95_percent_interval_of_the_mean_error_difference(monkeypatch):
    # the CPU study's final errors (docs/REPRODUCTION.md): w/o, w/ per seed
    errors = {0: (28.99, 27.38), 1: (29.29, 26.87), 2: (28.78, 26.89)}
    monkeypatch.setattr(pair_report, "pair_folders",
                        lambda root, config, seed: {"without_rsg": (seed, 0), "with_rsg": (seed, 1)})
    best_errors = {0: (27.79, 26.52), 1: (28.09, 26.01), 2: (27.58, 26.03)}    # final minus 1.20 / 0.86
    monkeypatch.setattr(pair_report, "last_finished_epoch", lambda folder: 199)
    monkeypatch.setattr(pair_report, "epoch_numbers", lambda folder, epoch: {
        "error": (errors if epoch == "final" else best_errors)[folder[0]][folder[1]],
        "many": 70.0, "medium": 50.0, "few": None})
    final, best = (block.splitlines() for block in pair_report.summary("c.yaml", [0, 1, 2], "runs").split("\n\n"))
    # mean -1.973, std 0.411, t(2) = 4.303: -1.973 -+ 4.303 * 0.411 / sqrt(3)
    assert final[0].startswith("test numbers (%) at the final epoch")
    assert final[-1] == "final epoch, error diff, 95% t-interval of the mean over 3 seeds: -3.00 to -0.95"
    assert final[-2].startswith("final epoch, diff mean ± std over seeds: error -1.97 ± 0.41")
    assert best[0].startswith("test numbers (%) at the best evaluated epoch")
    assert best[-2].startswith("best epoch, diff mean ± std over seeds: error -1.63 ± 0.41")
    assert "t-interval" not in pair_report.summary("c.yaml", [0], "runs")


@pytest.mark.slow
def test_exported_results_hold_the_evidence_and_read_like_the_runs(pair_run, tmp_path):
    import shutil

    from tools import export_results

    runs = tmp_path / "runs"
    shutil.copytree(pair_run["tmp"] / "runs", runs)
    folders = pair_folders(str(runs), pair_run["config"], 0)
    with open(os.path.join(folders["without_rsg"], "metrics.jsonl")) as f:
        lines = f.readlines()
    with open(os.path.join(folders["without_rsg"], "metrics.jsonl"), "w") as f:
        f.writelines(lines[:-1])                                     # this branch is now unfinished
    results = tmp_path / "results"
    assert export_results.export(str(runs), str(results), []) == ([folders["shared"], folders["with_rsg"]], [],
                                                                  [folders["without_rsg"]])
    exported = pair_folders(str(results), pair_run["config"], 0)
    assert sorted(os.listdir(exported["with_rsg"])) == ["branch.json", "config.yaml", "export.json",
                                                       "last.per_class.csv", "last.report.json", "metrics.jsonl",
                                                       "train.log"]
    assert not os.path.exists(exported["without_rsg"])
    # the float32 evaluation of last.pt is the final epoch's (a float32 run), and names the checkpoint
    report = json.load(open(os.path.join(exported["with_rsg"], "last.report.json")))
    final = json.loads(open(os.path.join(exported["with_rsg"], "metrics.jsonl")).readlines()[-1])["test"]
    assert report["top1"] == pytest.approx(final["top1"], abs=1e-9)
    assert len(report["sha256"]) == 64 and report["epoch"] == 3 and report["code_version"] != "unknown"
    # again: nothing new; a different run at the same place is refused, never overwritten
    assert export_results.export(str(runs), str(results), [])[:2] == ([], [folders["shared"], folders["with_rsg"]])
    with open(os.path.join(exported["shared"], "metrics.jsonl"), "a") as f:
        f.write("{}\n")
    with pytest.raises(export_results.UserError, match="never overwritten"):
        export_results.export(str(runs), str(results), [])


@pytest.mark.slow
def test_pair_refuses_configs_that_differ_beyond_rsg(tmp_path):
    with_rsg = write_config(tmp_path / "w.yaml", tiny_config_dict(tmp_path / "x", **SECTIONS))
    other = tiny_config_dict(tmp_path / "x", **SECTIONS)
    other["rsg"]["enabled"] = False
    other["optim"]["lr"] = 0.2
    without = write_config(tmp_path / "wo.yaml", other)
    result = run_script("scripts/rsg_pair.py", "--config", with_rsg, "--without", without, "--dry-run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "optim.lr" in result.stderr


def trained_configs(commands: list) -> list:
    """The config each of the pair's train.py commands trains, as train.py resolves it."""
    configs = []
    for command in commands:
        args = train_script.parse_args(command[command.index("train.py") + 1:])
        configs.append(load_config(os.path.join(ROOT, args.config), args.overrides))
    return configs


def test_a_users_epochs_override_leaves_the_shared_stage_at_the_threshold(tmp_path):
    """train.epochs=E sets the branches' length; the shared stage still stops at T_th and keeps its name."""
    config = write_config(tmp_path / "tiny_rsg.yaml", tiny_config_dict(tmp_path / "unused", **SECTIONS))
    commands = pair_commands(config, config, 0, str(tmp_path / "runs"), ["train.epochs=5", "name=mine"])
    shared, without, with_rsg = trained_configs(commands)
    assert shared.train.epochs == SECTIONS["rsg"]["threshold_epoch"] and shared.name == "mine" + SHARED_STAGE_SUFFIX
    assert without.train.epochs == with_rsg.train.epochs == 5 and not without.rsg.enabled


@pytest.mark.parametrize("option, value", [("--seeds", ","), ("--seeds", ""), ("--seeds", "0,0"), ("--seeds", "0,,1"),
                                           ("--seeds", "-1"), ("--gpus", "-1"), ("--gpus", "0")])
def test_pair_refuses_no_seeds_a_repeated_or_negative_seed_and_fewer_than_one_gpu(option, value, capsys):
    """A seed given twice would count one pair twice in the mean and std of the differences."""
    assert rsg_pair.main(["--config", "x.yaml", option, value]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f"argument {option}" in lines[0] and value in lines[0], lines


# ---------------------------------------------------------------------------------------------
# Tables


@pytest.mark.slow
def test_paper_tables_paired_pairs_tables_1_and_6(tmp_path):
    one_subset = ["data.subset=first"]        # what --subset first passes: a pair shares one first stage
    jobs, paired, scratch = plan_paired(get_table(6), (0, 1, 2), str(tmp_path), overrides=one_subset)
    pair_jobs = [job for job in jobs if job.train and "scripts/rsg_pair.py" in job.train]
    assert len(pair_jobs) == 8 * 3                        # LDAM-DRW vs LDAM-DRW-RSG in 8 columns x 3 seeds
    assert len(jobs) == (56 - 16) * 3 + 8 * 3             # the other rows train as before
    assert (paired, scratch) == (8 * 3 * (160 + 2 * 40), 8 * 3 * 400)
    jobs, paired, scratch = plan_paired(get_table(1), (0,), str(tmp_path), overrides=one_subset)
    assert len(jobs) == 16 and all("scripts/rsg_pair.py" in job.train for job in jobs)
    without = {job.train[job.train.index("--without") + 1] for job in jobs}
    assert "configs/cifar10_lt/erm_r50.yaml" in without and paired / scratch == pytest.approx(0.6)


@pytest.mark.slow
def test_paper_tables_paired_on_the_cpu_gives_rsg_pair_one_process_per_run(tmp_path):
    """paper_tables' --gpus 0 (the CPU: its slots hide the GPUs) is rsg_pair's --gpus 1, which refuses 0."""
    jobs, _, _ = plan_paired(get_table(1), (0,), str(tmp_path), gpus=0, overrides=["data.subset=first"])
    assert {rsg_pair.parse_args(job.train[2:]).gpus for job in jobs} == {1}


@pytest.mark.slow
def test_paper_tables_paired_dry_run_states_the_saving(tmp_path):
    def dry_run(*extra):
        return subprocess.run([sys.executable, "scripts/paper_tables.py", "--table", "6", "--paired", "--dry-run",
                               "--output-root", str(tmp_path), *extra], cwd=ROOT, env=SCRIPT_ENV,
                              capture_output=True, text=True, timeout=200)

    result = dry_run("--subset", "first")
    assert result.returncode == 0, result.stderr
    assert "5760 epochs instead of 9600" in result.stderr
    assert sum("rsg_pair.py" in line for line in result.stdout.splitlines()) == 24
    # The paper's pairs come from two subsets: a shared first stage needs one, named.
    refused = dry_run()
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--subset first" in refused.stderr


def fake_branch(folder, config, seed, top1, parent_hash):
    fake_run(folder, config, seed, [top1])
    with open(os.path.join(folder, BRANCH_FILE), "w") as f:
        json.dump({"sha256": parent_hash, "epoch": 160}, f)


def test_collector_reports_per_seed_differences_of_paired_cells(tmp_path):
    runs = tmp_path / "runs"
    tops = {0: (80.0, 81.5), 1: (79.0, 80.0), 2: (81.0, 81.7)}       # (w/o, w/ RSG) top-1
    for seed, (without, with_rsg) in tops.items():
        fake_branch(runs / f"wo{seed}", "configs/cifar10_lt/ldam_drw_r100.yaml", seed, without, f"h{seed}")
        fake_branch(runs / f"w{seed}", "configs/cifar10_lt/ldam_drw_rsg_r100.yaml", seed, with_rsg, f"h{seed}")
    fake_run(runs / "shared0", "configs/cifar10_lt/ldam_drw_rsg_r100.yaml", 0, [99.0],
             overrides=["train.epochs=160", f"name=ldam_drw_rsg_r100{SHARED_STAGE_SUFFIX}"])
    collected, unknown = collector.collect([get_table(6)], str(runs))
    assert unknown == []                                      # the shared stage is skipped, silently
    table, seeds, results = collected[0]
    cell = table.cell("LDAM-DRW-RSG", "CIFAR-10 LT 100")
    result = next(r for r in results if r.cell == cell)
    assert result.values[0] == pytest.approx(18.5)           # not the shared stage's 1.0
    pairs = collector.pair_results(table, results)
    assert len(pairs) == 8
    pair = next(p for p in pairs if p.with_rsg.cell == cell)
    differences = [(100 - w) - (100 - wo) for wo, w in tops.values()]
    assert list(pair.differences.values()) == pytest.approx(differences)
    text = collector.format_text(table, results, seeds)
    line = next(line for line in text.splitlines() if "LDAM-DRW vs LDAM-DRW-RSG, CIFAR-10 LT 100" in line)
    assert f"mean {statistics.fmean(differences):+.2f} ± {statistics.stdev(differences):.2f}" in line
    assert "paired: shared first stage" in line and "seed 0 -1.50" in line
    markdown = collector.format_markdown(table, results, seeds)
    assert "- LDAM-DRW vs LDAM-DRW-RSG, CIFAR-10 LT 100: final epoch: seed 0 -1.50" in markdown
    assert f"; best epoch: mean {statistics.fmean(pair.best.differences.values()):+.2f}" in line


def test_collector_pairs_independent_runs_too(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        fake_run(runs / f"wo{seed}", "configs/cifar10_lt/erm_r50.yaml", seed, [70.0 + seed])
        fake_run(runs / f"w{seed}", "configs/cifar10_lt/erm_rsg_r50.yaml", seed, [71.0 + seed])
    collected, _ = collector.collect([get_table(1)], str(runs))
    table, seeds, results = collected[0]
    pair = next(p for p in collector.pair_results(table, results) if p.differences)
    assert pair.label == "ERM, CIFAR-10 LT" and list(pair.differences.values()) == pytest.approx([-1.0] * 3)
    assert "(independent runs)" in pair.text()
