"""The benchmark, profiling and memory command lines run end to end on a tiny config (their figures are
for docs/BENCHMARKS.md, never asserted here): every row they promise is printed."""

from __future__ import annotations

import re

import pytest
import torch

from tools import benchmark, profile_step, rsg_memory

pytestmark = pytest.mark.slow      # short training runs, profiles and an RSG at ImageNet width: about 20 s


def test_benchmark_prints_every_mode_and_a_full_run(make_tiny_config, tmp_path, capsys):
    config = make_tiny_config("bench")
    assert benchmark.main(["--config", config, "--steps", "2", "--warmup", "1", "--loaders", "standard,device",
                           "--precisions", "none", "--threads", "1,2", "--full-run",
                           "--full-run-dir", str(tmp_path / "full")]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"\| [12] \| (standard|device) ", line)]
    # 2 thread counts x 2 input paths, each: plain, before T_th, from T_th, evaluation
    assert len(rows) == 16
    assert [(r[0].strip(), r[1].strip()) for r in rows[::4]] == [("1", "standard"), ("1", "device"),
                                                                  ("2", "standard"), ("2", "device")]
    modes = [re.split(r" \(", row[5].strip())[0] for row in rows[:4]]
    assert modes == list(benchmark.MODES) + [benchmark.EVALUATION]
    assert "generated/step" in rows[2][5] and all(row[6].strip().isdigit() for row in rows)
    assert rows[0][7].strip() == "1.00x" and rows[0][8].strip() == "1.00x"    # plain of the first setting
    assert rows[3][7].strip() == ""                                           # no RSG cost for evaluation
    match = re.search(r"full run: 2 epochs of .* final top-1 ([0-9.]+)%, error ([0-9.]+)%", out)
    assert match and abs(float(match[1]) + float(match[2]) - 100) < 0.02


def test_benchmark_alternates_the_rows_in_rotated_rounds():
    order = []

    def row(name):
        return benchmark.Row(benchmark.Setting(1, "device", "none", False, False), name,
                             lambda: order.append(name) or 0, batch=4)
    rows = [row("a"), row("b"), row("c")]
    benchmark.run_alternated(rows, torch.device("cpu"), steps=2, warmup=1)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(r.seconds) == 2 for r in rows)                   # the warm-up round is not timed


def test_profile_step_reports_both_phases(make_tiny_config, tmp_path, capsys):
    config = make_tiny_config("profile")
    assert profile_step.main(["--config", config, "--steps", "2", "--warmup", "1", "--rows", "3",
                              "--trace-dir", str(tmp_path / "traces")]) == 0
    out = capsys.readouterr().out
    assert "before T_th (epoch 0)" in out and "from T_th (epoch 1)" in out
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["epoch0.json", "epoch1.json"]


def test_rsg_memory_prints_both_phases_of_a_recipe(capsys):
    assert rsg_memory.main(["--batches", "4", "--recipes", "places_lt"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| places_lt | 4 |")]
    assert [row[2].strip() for row in rows] == ["before T_th", "from T_th"]
    assert rows[0][3].strip() == "0" and int(rows[1][3]) >= 1      # RSG generates only from T_th


def test_benchmark_prices_the_diagnostics(make_tiny_config, capsys):
    config = make_tiny_config("bench_diagnostics")
    assert benchmark.main(["--config", config, "--skip-table", "--price-diagnostics", "2", "--warmup", "1"]) == 0
    match = re.search(r"median step ([0-9.]+) ms with them, ([0-9.]+) ms without \(on / off ([0-9.]+)\)",
                      capsys.readouterr().out)
    assert match and float(match[1]) > 0 and float(match[2]) > 0
    assert abs(float(match[1]) / float(match[2]) - float(match[3])) < 0.01
