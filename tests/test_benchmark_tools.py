"""The benchmark and profiling command lines run end to end on a tiny config (their figures are
for docs/BENCHMARKS.md, never asserted here): every row they promise is printed."""

from __future__ import annotations

import re

import pytest

from tools import benchmark, profile_step

pytestmark = pytest.mark.slow      # two short training runs and two profiles: about 25 s


def test_benchmark_prints_every_mode_and_a_full_run(make_tiny_config, tmp_path, capsys):
    config = make_tiny_config("bench")
    assert benchmark.main(["--config", config, "--steps", "2", "--warmup", "1", "--loaders", "standard,device",
                           "--precisions", "none", "--full-run", "--full-run-dir", str(tmp_path / "full")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| standard") or line.startswith("| device")]
    assert len(rows) == 6                                   # 2 input paths x (plain, before T_th, from T_th)
    assert [re.split(r" \(", row.split("|")[3].strip())[0] for row in rows[:3]] == list(benchmark.MODES)
    assert "generated/step" in rows[2] and rows[0].split("|")[6].strip().isdigit()   # eval images/s on plain
    match = re.search(r"full run: 2 epochs of .* final top-1 ([0-9.]+)%, error ([0-9.]+)%", out)
    assert match and abs(float(match[1]) + float(match[2]) - 100) < 0.02


def test_profile_step_reports_both_phases(make_tiny_config, tmp_path, capsys):
    config = make_tiny_config("profile")
    assert profile_step.main(["--config", config, "--steps", "2", "--warmup", "1", "--rows", "3",
                              "--trace-dir", str(tmp_path / "traces")]) == 0
    out = capsys.readouterr().out
    assert "before T_th (epoch 0)" in out and "from T_th (epoch 1)" in out
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["epoch0.json", "epoch1.json"]
