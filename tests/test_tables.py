"""The paper's tables as scripts (scripts/table<N>.sh over scripts/paper_tables.py) and the results
collector (scripts/collect_results.py): dry-run listings, skipping finished runs, and the numbers
collected from generated run folders (config.yaml + metrics.jsonl written directly, no training),
plus one tiny real run through a table script."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SCRIPT_ENV
from engine.config import load_config, save_config
from engine.evaluation import EvaluationReport, write_per_class_csv
from engine.metrics import accuracy_report
from tools import collect_results as collector
from tools.beyond_tables import BEYOND_TABLES
from tools.run_layout import run_dir
from tools.table_index import get_table
from tools.table_spec import TABLES

# runs per table: configs x default seeds (3 for CIFAR, 1 for Tables 7-9)
EXPECTED_RUNS = {1: 4 * 8 * 3, 2: 5 * 8 * 3, 3: 6 * 4 * 3, 5: 3 * 4 * 3, 6: 7 * 8 * 3, 7: 8, 8: 2, 9: 4}


def table_script(number: int, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", f"table{number}.sh"), *map(str, args)],
                          env=dict(SCRIPT_ENV, PYTHON=sys.executable, **(env or {})), capture_output=True,
                          text=True, timeout=120)


def fake_run(folder, config: str, seed: int, top1s: list, last_epoch=None, overrides=()) -> str:
    """A run folder as train.py leaves it: the resolved config.yaml and a metrics.jsonl whose last
    lines have the test top-1s `top1s` (the last at `last_epoch`, default the config's last epoch)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    cfg = load_config(os.path.join(ROOT, config), [f"train.seed={seed}", f"output_dir={folder}", *overrides])
    save_config(cfg, os.path.join(folder, "config.yaml"))
    last = cfg.train.epochs - 1 if last_epoch is None else last_epoch
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for offset, top1 in enumerate(top1s):
            epoch = last - len(top1s) + 1 + offset
            f.write(json.dumps({"epoch": epoch, "lr": 0.001, "train": {"loss_total": 1.0},
                                "test": {"top1": top1, "many": None, "medium": 50.0, "few": 10.0}}) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------
# The table definitions


def test_tables_have_the_papers_cells():
    for number, expected in EXPECTED_RUNS.items():
        table = get_table(number)
        assert len(table.configs()) * len(table.seeds) == expected
        assert {(c.row, c.column) for c in table.cells} == {(r, c) for r in table.rows for c in table.columns}
    table6 = get_table(6)
    assert table6.cell("LDAM-DRW-RSG", "CIFAR-100 Step 50").paper == 49.43
    assert table6.cell("CB Focal", "CIFAR-10 LT 100").config == "configs/cifar10_lt/cb_focal_r100.yaml"
    assert get_table(8).cell("LDAM-DRS-RSG", "Few").measure == "few"
    assert get_table(1).cell("M-DRW", "CIFAR-10 Step w/ RSG").config == "configs/cifar10_step/m_drw_rsg_r50.yaml"


def test_reproduction_md_lists_every_table_and_config():
    with open(os.path.join(ROOT, "docs", "REPRODUCTION.md")) as f:
        text = f.read()
    assert text.count(collector.BEGIN) == 1 and text.count(collector.END) == 1
    for number in [*TABLES, *BEYOND_TABLES]:
        table = get_table(number)
        assert f"## Table {number} ({table.title})" in text
        for config in table.configs():
            assert f"`{config}`" in text


# ---------------------------------------------------------------------------------------------
# Table scripts: dry runs, skipping, options


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """{table: CompletedProcess} of `bash scripts/table<N>.sh --dry-run` into an empty output root."""
    out = tmp_path_factory.mktemp("dry")
    processes = {n: subprocess.Popen(["bash", os.path.join(ROOT, "scripts", f"table{n}.sh"), "--dry-run",
                                      "--output-root", str(out)], env=dict(SCRIPT_ENV, PYTHON=sys.executable),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n in EXPECTED_RUNS}
    results = {}
    for number, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)   # 8 processes at once, each importing torch
        results[number] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(EXPECTED_RUNS))
def test_dry_run_lists_every_run_of_the_table(dry_runs, number):
    result = dry_runs[number]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == EXPECTED_RUNS[number]
    assert f"Table {number}: {EXPECTED_RUNS[number]} runs" in result.stderr
    seeds = get_table(number).seeds
    for line in lines:
        config = re.search(r"--config (\S+)", line).group(1)
        seed = int(re.search(r"train\.seed=(\d+)", line).group(1))
        assert seed in seeds
        assert re.search(rf"output_dir=\S+/{re.escape(os.path.splitext(config)[0][len('configs/'):])}/seed{seed}\b",
                         line)
        assert "--resume auto" in line
        assert ("eval.py" in line) == (number in (7, 8, 9))
    configs = {re.search(r"--config (\S+)", line).group(1) for line in lines}
    assert configs == set(get_table(number).configs())
    for config in configs:                   # every config named exists and loads
        load_config(os.path.join(ROOT, config))


@pytest.mark.slow
def test_finished_runs_are_skipped_and_interrupted_ones_resume(tmp_path):
    out = tmp_path / "runs"
    finished = fake_run(run_dir(str(out), "configs/cifar10_lt/erm_r100.yaml", 1), "configs/cifar10_lt/erm_r100.yaml",
                        1, [70.0])
    interrupted = fake_run(run_dir(str(out), "configs/cifar10_lt/erm_r50.yaml", 0), "configs/cifar10_lt/erm_r50.yaml",
                           0, [50.0], last_epoch=99)
    open(os.path.join(interrupted, "last.pt"), "w").close()
    # Table 8: one run trained but not yet evaluated on the test list, one evaluated too
    trained = fake_run(run_dir(str(out), "configs/places_lt/resnet152_ldam_drs.yaml", 0),
                       "configs/places_lt/resnet152_ldam_drs.yaml", 0, [30.0])
    evaluated = fake_run(run_dir(str(out), "configs/places_lt/resnet152_ldam_drs_rsg.yaml", 0),
                         "configs/places_lt/resnet152_ldam_drs_rsg.yaml", 0, [30.0])
    open(os.path.join(evaluated, "best.per_class.csv"), "w").close()

    result = table_script(6, "--dry-run", "--output-root", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 167
    assert not any(f"output_dir={finished} " in line or line.endswith(f"output_dir={finished}") for line in lines)
    assert f"done: {finished}" in result.stderr
    assert "167 to run" in result.stderr
    assert any(f"output_dir={interrupted}" in line and "--resume auto" in line for line in lines)

    result = table_script(8, "--dry-run", "--output-root", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{sys.executable} eval.py --checkpoint {trained}/best.pt --split test "
                                          f"> {trained}/eval_test.txt"]
    assert f"done: {evaluated}" in result.stderr


@pytest.mark.slow
def test_options_reach_the_commands(tmp_path):
    result = table_script(9, "--dry-run", "--gpus", 4, "--data-root", tmp_path, "--seeds", "3,4",
                          "--output-root", tmp_path / "r", "optim.lr=0.05")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 * 2
    for line in lines:
        assert re.match(r"\S*torchrun --standalone --nproc_per_node=4 train\.py --config configs/imagenet_lt/", line)
        assert f"data.root={tmp_path} optim.lr=0.05" in line and re.search(r"train\.seed=[34] ", line)
    result = table_script(6, "--dry-run", "--seeds", "0", "--cells", "configs/cifar100_step/*")
    assert len(result.stdout.splitlines()) == 7 * 2
    assert all(" train.py " in line and "torchrun" not in line for line in result.stdout.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["train.seed=5"], "sets train.seed per run"),
    (["optim.lrr=1"], "key 'optim.lrr' is unknown"),
    (["--cells", "configs/nowhere/*"], "matches no config"),
])
def test_bad_options_stop_with_one_line(args, message):
    result = table_script(6, "--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# The collector on generated run folders


@pytest.fixture
def table6_runs(tmp_path):
    """Table 6 runs: ERM CIFAR-10-LT rho 100 with 3 seeds (one in a folder of another name); LDAM-DRW-RSG
    CIFAR-10-LT rho 100 with seeds 0 and 2 finished, seed 1 interrupted; a seed nobody asked for; and a
    CIFAR-100-LT ERM run in a folder named like the CIFAR-10 one."""
    runs = tmp_path / "runs"
    erm, rsg = "configs/cifar10_lt/erm_r100.yaml", "configs/cifar10_lt/ldam_drw_rsg_r100.yaml"
    fake_run(runs / "cifar10_lt/erm_r100/seed0", erm, 0, [71.0, 70.0])
    fake_run(runs / "cifar10_lt/erm_r100/seed1", erm, 1, [71.5])
    fake_run(runs / "elsewhere/my_run", erm, 2, [69.1])
    fake_run(runs / "cifar10_lt/erm_r100/seed7", erm, 7, [10.0])
    fake_run(runs / "cifar10_lt/ldam_drw_rsg_r100/seed0", rsg, 0, [80.0])
    fake_run(runs / "cifar10_lt/ldam_drw_rsg_r100/seed1", rsg, 1, [90.0], last_epoch=120)
    fake_run(runs / "cifar10_lt/ldam_drw_rsg_r100/seed2", rsg, 2, [81.0, 79.0])
    fake_run(runs / "misnamed/cifar10_lt/erm_r100/seed0", "configs/cifar100_lt/erm_r100.yaml", 0, [40.0])
    return str(runs)


def collect_one(number: int, runs: str):
    (table, seeds, results), = collector.collect([get_table(number)], runs)[0]
    return table, seeds, {(r.cell.row, r.cell.column): r for r in results}


def test_collector_means_stds_and_differences(table6_runs):
    _, _, cells = collect_one(6, table6_runs)
    erm = cells[("ERM", "CIFAR-10 LT 100")]
    assert erm.values == pytest.approx({0: 30.0, 1: 28.5, 2: 30.9})          # error = 100 - final top-1
    assert erm.mean == pytest.approx(29.8)
    assert erm.std == pytest.approx(statistics.stdev([30.0, 28.5, 30.9]))     # 1.2124 (n - 1)
    assert erm.diff == pytest.approx(29.8 - 29.64)
    assert erm.folders[2].endswith("elsewhere/my_run") and not erm.differs
    rsg = cells[("LDAM-DRW-RSG", "CIFAR-10 LT 100")]
    assert rsg.values == pytest.approx({0: 20.0, 2: 21.0})
    assert (rsg.mean, rsg.std, rsg.diff) == pytest.approx((20.5, 0.5 ** 0.5, 20.5 - 20.45))
    assert rsg.notes == ["seed 1 at epoch 121/200"]
    assert cells[("ERM", "CIFAR-100 LT 100")].values == pytest.approx({0: 60.0})   # identified by its config
    assert cells[("ERM", "CIFAR-10 LT 50")].n == 0


def test_collector_best_epoch_beside_the_final_one(table6_runs):
    _, _, cells = collect_one(6, table6_runs)
    erm = cells[("ERM", "CIFAR-10 LT 100")]
    assert erm.values == pytest.approx({0: 30.0, 1: 28.5, 2: 30.9})
    assert erm.best.values == pytest.approx({0: 29.0, 1: 28.5, 2: 30.9})
    assert erm.best.diff == pytest.approx(statistics.fmean([29.0, 28.5, 30.9]) - 29.64)
    assert cells[("LDAM-DRW-RSG", "CIFAR-10 LT 100")].best.values == pytest.approx({0: 20.0, 2: 19.0})


@pytest.mark.slow
def test_collector_prints_and_writes_the_table(table6_runs, tmp_path, capsys):
    markdown, csv_path = tmp_path / "t6.md", tmp_path / "t6.csv"
    assert collector.main([table6_runs, "--table", "6", "--markdown", str(markdown), "--csv", str(csv_path)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    erm = next(i for i, line in enumerate(lines) if line.startswith("ERM "))
    assert re.match(r"ERM\s+final\s+29\.80 ± 1\.21\s+not run yet", lines[erm])
    assert re.match(r"\s+best\s+29\.47 ± 1\.27\s+60\.00 \(1/3 seeds\)$", lines[erm + 1])   # of 29.0, 28.5, 30.9
    assert re.match(r"\s+paper\s+29\.64\s+25\.19", lines[erm + 2])
    assert lines[erm + 3].split() == ["diff", "+0.16", "-1.68"]          # the CIFAR-100-LT run: 60.00 - 61.68
    assert lines[erm + 4].split() == ["diff", "best", "-0.17", "-1.68"]
    assert "20.50 ± 0.71 (2/3 seeds)" in text
    assert "configs/cifar10_lt/ldam_drw_rsg_r100.yaml: seed 1 at epoch 121/200" in text

    md = markdown.read_text()
    assert "| ERM | final 29.80 ± 1.21, best 29.47 ± 1.27 (paper 29.64, +0.16 / -0.17) | not run yet (paper 25.19) |" in md
    assert "final 20.50 ± 0.71 (2/3 seeds), best 19.50 ± 0.71 (2/3 seeds) (paper 20.45, +0.05 / -0.95)" in md
    assert ("| CIFAR-10 | long-tailed | 100 | ERM | w/o | ldam_drw | `configs/cifar10_lt/erm_r100.yaml` | 29.64 | "
            "final 29.80 ± 1.21; best 29.47 ± 1.27 | final +0.16; best -0.17 | 3/3 |") in md

    with open(csv_path, newline="") as f:
        rows = {(r["row"], r["column"]): r for r in csv.DictReader(f)}
    assert len(rows) == 56
    erm = rows[("ERM", "CIFAR-10 LT 100")]
    assert (erm["mean"], erm["std"], erm["paper"], erm["diff"]) == ("29.8000", "1.2124", "29.6400", "0.1600")
    assert (erm["seeds_found"], erm["seeds_expected"], erm["values"]) == ("3", "3", "0:30.0000;1:28.5000;2:30.9000")
    assert (erm["best_mean"], erm["best_values"]) == ("29.4667", "0:29.0000;1:28.5000;2:30.9000")
    assert rows[("ERM", "CIFAR-10 LT 50")]["mean"] == "" and rows[("ERM", "CIFAR-10 LT 50")]["seeds_found"] == "0"


def test_collector_marks_runs_that_differ_from_their_config(tmp_path, capsys):
    config = "configs/cifar10_step/focal_r50.yaml"
    for seed in (0, 1, 2):
        fake_run(tmp_path / f"s{seed}", config, seed, [60.0], overrides=["train.epochs=2", "data.root=/x"])
    _, _, cells = collect_one(6, str(tmp_path))
    assert cells[("Focal", "CIFAR-10 Step 50")].differs == {"train.epochs"}    # data.root is where, not what
    assert collector.main([str(tmp_path), "--table", "6"]) == 0
    out = capsys.readouterr().out
    assert "40.00 ± 0.00*" in out and "* runs differ from the config in: train.epochs" in out


def evaluated_report(counts, per_class_images, seed=0):
    """An EvaluationReport of random predictions (60 % right) on a test list of `per_class_images`."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(len(counts)), per_class_images)
    predictions = np.where(rng.random(len(targets)) < 0.6, targets, (targets + 1) % len(counts))
    return EvaluationReport.from_accuracy(accuracy_report(predictions, targets, counts), targets, counts, "test")


PLACES_COUNTS = [300, 150, 101, 100, 60, 20, 19, 5]
PLACES_TEST_IMAGES = [7, 9, 11, 13, 3, 5, 17, 2]


def check_table8_cells(cells, report):
    for column, key in (("Many", "many"), ("Medium", "medium"), ("Few", "few"), ("All", "top1")):
        assert cells[("LDAM-DRS-RSG", column)].values[0] == pytest.approx(getattr(report, key), abs=1e-9)
        assert cells[("LDAM-DRS", column)].n == 0
    assert cells[("LDAM-DRS", "All")].notes == ["seed 0 not evaluated on the test list"]
    assert cells[("LDAM-DRS-RSG", "All")].diff == pytest.approx(report.top1 - 39.3)


def test_collector_reads_the_test_evaluation_of_large_scale_runs_from_the_csv_of_older_runs(tmp_path):
    """Table 8, a run evaluated before eval.py wrote its JSON report: best.pt's per-class CSV on the
    test list gives many / medium / few / all exactly as engine.metrics.accuracy_report computes them."""
    config = "configs/places_lt/resnet152_ldam_drs_rsg.yaml"
    folder = fake_run(tmp_path / "rsg", config, 0, [99.0])         # the val top-1 of metrics.jsonl is not used
    report = evaluated_report(PLACES_COUNTS, PLACES_TEST_IMAGES)
    write_per_class_csv(os.path.join(folder, "best.per_class.csv"), report, [f"c{i}" for i in range(8)])
    fake_run(tmp_path / "drs", "configs/places_lt/resnet152_ldam_drs.yaml", 0, [99.0])   # not evaluated yet
    check_table8_cells(collect_one(8, str(tmp_path))[2], report)


def test_collector_reads_the_json_report_of_large_scale_runs(tmp_path):
    """Table 8 from eval.py's best.report.json: its numbers are taken as eval.py computed them, and
    win over a per-class CSV beside it (here one of other numbers, so that the test tells them apart)."""
    folder = fake_run(tmp_path / "rsg", "configs/places_lt/resnet152_ldam_drs_rsg.yaml", 0, [99.0])
    report = evaluated_report(PLACES_COUNTS, PLACES_TEST_IMAGES)
    with open(os.path.join(folder, "best.report.json"), "w") as f:
        json.dump(report.to_json(), f)
    fake_run(tmp_path / "drs", "configs/places_lt/resnet152_ldam_drs.yaml", 0, [99.0])
    check_table8_cells(collect_one(8, str(tmp_path))[2], report)          # the JSON alone suffices
    other = evaluated_report(PLACES_COUNTS, PLACES_TEST_IMAGES, seed=3)
    assert (other.top1, other.many, other.few) != (report.top1, report.many, report.few)
    write_per_class_csv(os.path.join(folder, "best.per_class.csv"), other, [f"c{i}" for i in range(8)])
    check_table8_cells(collect_one(8, str(tmp_path))[2], report)


@pytest.mark.slow
def test_reproduction_keeps_the_text_around_the_tables(tmp_path, table6_runs):
    doc = tmp_path / "REPRODUCTION.md"
    doc.write_text(f"# Title\n\nhand-written preamble\n\n{collector.BEGIN}\nold tables\n{collector.END}\n\n"
                   "## Smoke runs\n\nkept\n")
    assert collector.main([table6_runs, "--reproduction", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nhand-written preamble\n\n" + collector.BEGIN)
    assert text.endswith(collector.END + "\n\n## Smoke runs\n\nkept\n")
    assert "old tables" not in text
    assert [int(n) for n in re.findall(r"^## Table (\d+) ", text, flags=re.M)] == list(TABLES)
    assert re.findall(r"^## Table (beyond\w*) ", text, flags=re.M) == ["beyond", "beyond_imagenet"]
    assert "final 29.80 ± 1.21, best 29.47 ± 1.27 (paper 29.64, +0.16 / -0.17)" in text
    assert "not run yet (paper 43.3)" in text
    assert "not run yet (published 22.46)" in text            # the beyond table: published figures, not the paper's
    doc.write_text("# no markers\n")
    assert collector.main([table6_runs, "--reproduction", str(doc)]) == 2


# ---------------------------------------------------------------------------------------------
# One tiny real run through a table script, then skipped, then collected


@pytest.mark.slow
def test_table_script_trains_skips_and_collects(tmp_path, tiny_cifar_root, capsys):
    out = tmp_path / "runs"
    shrink = ["--output-root", out, "--data-root", tiny_cifar_root, "--seeds", "0",
              "--cells", "configs/cifar10_lt/erm_r100.yaml", "train.epochs=1", "data.max_per_class=40",
              "data.imbalance_ratio=10", "data.batch_size=32", "data.num_workers=0", "train.device=cpu",
              "train.progress=false"]
    result = table_script(6, *shrink)
    assert result.returncode == 0, result.stderr
    folder = run_dir(str(out), "configs/cifar10_lt/erm_r100.yaml", 0)
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= set(os.listdir(folder))
    again = table_script(6, *shrink, "--dry-run")
    assert again.returncode == 0 and again.stdout == ""
    assert f"done: {folder}" in again.stderr
    _, _, cells = collect_one(6, str(out))
    erm = cells[("ERM", "CIFAR-10 LT 100")]
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        final = json.loads(f.read().splitlines()[-1])
    assert erm.values == pytest.approx({0: 100 - final["test"]["top1"]})
    assert erm.differs == {"data.batch_size", "data.imbalance_ratio", "data.max_per_class", "train.epochs"}


def test_collector_reads_a_table_run_on_one_subset_apart(tmp_path):
    """scripts/table6.sh --subset first puts every run under <root>/subset_first with data.subset=first:
    the collector with --subset first reads those (not marked as differing), and without it only the
    runs of each config's own subset."""
    runs = tmp_path / "runs"
    erm = "configs/cifar10_lt/erm_r100.yaml"                                  # its own subset: ldam_drw
    fake_run(runs / "cifar10_lt/erm_r100/seed0", erm, 0, [70.0])
    fake_run(runs / "subset_first/cifar10_lt/erm_r100/seed0", erm, 0, [72.0], overrides=["data.subset=first"])
    ((_, _, own),), _ = collector.collect([get_table(6)], str(runs))
    ((_, _, first),), _ = collector.collect([get_table(6)], str(runs), subset="first")
    own_erm = next(r for r in own if (r.cell.row, r.cell.column) == ("ERM", "CIFAR-10 LT 100"))
    first_erm = next(r for r in first if (r.cell.row, r.cell.column) == ("ERM", "CIFAR-10 LT 100"))
    assert own_erm.values == pytest.approx({0: 30.0}) and not own_erm.differs
    assert first_erm.values == pytest.approx({0: 28.0}) and not first_erm.differs
    # The forced-subset run read as a run of the config's own subset would be marked.
    fake_run(runs / "mixed/seed1", erm, 1, [50.0], overrides=["data.subset=first"])
    ((_, _, mixed),), _ = collector.collect([get_table(6)], str(runs))
    assert next(r for r in mixed if (r.cell.row, r.cell.column) == ("ERM", "CIFAR-10 LT 100")).differs
