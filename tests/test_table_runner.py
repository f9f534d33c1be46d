"""Several runs at once through a table script (`--jobs-per-gpu`), with real tiny trainings on the
CPU: N = 2 runs at a time, a failed run reported while the others finish, a second invocation
that skips the finished runs, and Ctrl-C stopping every run with its checkpoint saved."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SCRIPT_ENV
from tools.job_pool import available_cores
from tools.run_layout import run_dir

# Real tiny trainings, several at once, through a table script.
pytestmark = pytest.mark.slow

ERM = ("configs/cifar10_lt/erm_r100.yaml", "configs/cifar10_lt/erm_r50.yaml")


def runner_command(out, data_root, *args) -> list[str]:
    """scripts/table6.sh on the two ERM CIFAR-10-LT configs, 2 runs at a time on the CPU, shrunk to
    the tiny data; `args` are options then overrides."""
    return ["bash", os.path.join(ROOT, "scripts", "table6.sh"), "--output-root", str(out), "--data-root", data_root,
            "--cells", "configs/cifar10_lt/erm_r*", "--gpus", "0", "--jobs-per-gpu", "2", *map(str, args),
            "data.max_per_class=40", "data.imbalance_ratio=10", "data.batch_size=32", "data.num_workers=0",
            "train.device=cpu"]


def run_runner(out, data_root, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(runner_command(out, data_root, *args), env=dict(SCRIPT_ENV, PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=timeout)


def final_epoch(folder) -> int:
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])["epoch"]


def most_running(stdout: str) -> int:
    """The most runs going at once, from the runner's start / finish / FAILED lines."""
    running = most = 0
    for line in stdout.splitlines():
        if re.match(r"\[[\d:]+\] start ", line):
            running += 1
            most = max(most, running)
        elif re.match(r"\[[\d:]+\] (finish|FAILED|stopped) ", line):
            running -= 1
    return most


def test_two_at_a_time_a_failure_reported_and_a_second_invocation_skips(tmp_path, tiny_cifar_root):
    out = tmp_path / "runs"
    folders = [run_dir(str(out), config, seed) for config in ERM for seed in (0, 1)]
    broken = folders[3]
    os.makedirs(broken)
    with open(os.path.join(broken, "last.pt"), "w") as f:      # --resume auto cannot read it: the run fails
        f.write("not a checkpoint")

    first = run_runner(out, tiny_cifar_root, "--seeds", "0,1", "train.epochs=1")
    assert first.returncode == 1, first.stderr
    assert most_running(first.stdout) == 2
    for folder in folders[:3]:
        assert final_epoch(folder) == 0 and os.path.isfile(os.path.join(folder, "last.pt"))
        with open(folder + ".log") as f:                          # one log per run, beside its folder
            log = f.read()
        threads = max(available_cores() // 2, 1)
        assert f"on CPU (CUDA_VISIBLE_DEVICES= MKL_NUM_THREADS={threads} OMP_NUM_THREADS={threads})" in log
        assert "train.progress=false" in log and "test top-1" in log
    assert "summary: 3 finished, 1 failed, 0 left (0 interrupted, 0 not started)" in first.stderr
    failed = next(line for line in first.stderr.splitlines() if line.startswith("  failed: "))
    assert failed.startswith(f"  failed: {broken} (exit status 2): error: cannot read checkpoint")
    assert failed.endswith(f"see {broken}.log")

    os.remove(os.path.join(broken, "last.pt"))                   # the user mends it and runs the same command
    second = run_runner(out, tiny_cifar_root, "--seeds", "0,1", "train.epochs=1")
    assert second.returncode == 0, second.stderr
    assert "Table 6: 4 runs (2 configs x 2 seeds), 3 done, 1 to run" in second.stderr
    assert second.stdout.count(" start ") == 1 and f"start 1/1 {broken} on CPU" in second.stdout
    assert "summary: 1 finished, 0 failed, 0 left (0 interrupted, 0 not started); 3 were done already" in second.stderr
    assert final_epoch(broken) == 0
    with open(broken + ".log") as f:                              # appended: both attempts are in it
        assert f.read().count("=== ") == 2


def our_processes(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the test's folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_ctrl_c_stops_every_run_with_its_checkpoint_saved(tmp_path, tiny_cifar_root):
    out = tmp_path / "runs"
    folders = [run_dir(str(out), config, 0) for config in ERM]
    runner = subprocess.Popen(runner_command(out, tiny_cifar_root, "--seeds", "0", "train.epochs=50"),
                              env=dict(SCRIPT_ENV, PYTHON=sys.executable), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not all(os.path.exists(os.path.join(f, "metrics.jsonl")) for f in folders):   # both are training
            assert runner.poll() is None and time.time() < deadline, runner.communicate()
            time.sleep(0.5)
        runner.send_signal(signal.SIGINT)                         # what Ctrl-C in the terminal does
        stdout, stderr = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 128 + signal.SIGINT, stderr
    assert "summary: 0 finished, 0 failed, 2 left (2 interrupted, 0 not started)" in stderr
    assert stdout.count(" stopped ") == 2
    assert our_processes(str(tmp_path)) == []                     # no run left behind
    for folder in folders:
        with open(os.path.join(folder, "train.log")) as f:
            assert "stopped by signal 2: saved" in f.read()
        assert os.path.isfile(os.path.join(folder, "last.pt"))
    again = subprocess.run(runner_command(out, tiny_cifar_root, "--seeds", "0", "--dry-run", "train.epochs=50"),
                           env=dict(SCRIPT_ENV, PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 2 and "--resume auto" in again.stdout
