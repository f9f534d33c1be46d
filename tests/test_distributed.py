"""Real torchrun with the gloo backend, 2 processes on the CPU."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, SCRIPT_ENV, tiny_config_dict, write_config
from engine.checkpoint import load_checkpoint

# Every test starts torchrun with 2 gloo processes (tens of seconds each).
pytestmark = pytest.mark.slow

WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def torchrun(*args, timeout=240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=SCRIPT_ENV, capture_output=True, text=True, timeout=timeout)


def single_process(*args, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=SCRIPT_ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_two_ranks_take_the_same_step_as_one_process_and_count_each_test_image_once(tmp_path):
    # No augmentation draws (they are seeded per rank), no RSG (its pairs are random per rank), and
    # the worker removes batch-norm (per-rank statistics; SyncBatchNorm is CUDA-only).
    tree = tiny_config_dict(tmp_path / "run", data={"crop_padding": 0}, rsg={"enabled": False})
    path = write_config(tmp_path / "step.yaml", tree)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    ranks = torchrun(WORKER, "step", path, tmp_path / "ddp")
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    alone = single_process(WORKER, "step", path, tmp_path / "one")
    assert alone.returncode == 0, alone.stderr[-3000:]

    two, one = torch.load(tmp_path / "ddp" / "weights.pt"), torch.load(tmp_path / "one" / "weights.pt")
    initial = torch.load(tmp_path / "one" / "initial.pt")
    assert two.keys() == one.keys() == initial.keys()
    for key in one:
        assert torch.allclose(two[key].float(), one[key].float(), rtol=1e-4, atol=1e-6), key
    changed = [key for key in one if not torch.allclose(one[key].float(), initial[key].float())]
    assert len(changed) > len(one) // 2        # the step moved the weights, so the comparison means something

    shards, whole = torch.load(tmp_path / "ddp" / "eval.pt", weights_only=False), \
        torch.load(tmp_path / "one" / "eval.pt", weights_only=False)
    assert len(shards["labels"]) == len(whole["labels"]) == 299          # 299 = 150 + 149, no padding
    assert shards["rank_items"] == 150
    # Rank 0 holds the even test indices, rank 1 the odd ones; gathered in rank order.
    order = np.concatenate([np.arange(0, 299, 2), np.arange(1, 299, 2)])
    assert np.array_equal(shards["labels"], whole["labels"][order])
    assert np.array_equal(shards["predictions"], whole["predictions"][order])


def test_a_run_crossing_the_rsg_threshold_completes_and_resumes_under_torchrun(tmp_path):
    output = tmp_path / "run"
    tree = tiny_config_dict(output, rsg={"threshold_epoch": 1}, train={"epochs": 2})
    path = write_config(tmp_path / "ddp.yaml", tree)
    first = torchrun(os.path.join(ROOT, "train.py"), "--config", path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert load_checkpoint(str(output / "last.pt"))["epoch"] == 2
    refused = torchrun(os.path.join(ROOT, "train.py"), "--config", path)      # no --resume: the folder is taken
    assert refused.returncode != 0
    assert refused.stderr.count("error: output_dir") == 1, refused.stderr[-3000:]
    assert "[rank1]: Traceback" not in refused.stderr and "[rank0]: Traceback" not in refused.stderr
    root_cause = refused.stderr[refused.stderr.index("Root Cause"):]
    assert "rank      : 0" in root_cause and "UserError: output_dir" in root_cause
    second = torchrun(os.path.join(ROOT, "train.py"), "--config", path, "--resume", "auto", "train.epochs=3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "x 2 ranks" in second.stderr
    assert "generated/step per rank" in second.stderr
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]          # rank 0 alone writes
    assert records[2]["train"]["generated_per_step"] > 0       # RSG generated after the threshold
    assert records[2]["test"]["top1"] >= 0
    assert load_checkpoint(str(output / "last.pt"))["epoch"] == 3


def test_a_failure_on_one_rank_ends_the_job_with_its_error_and_keeps_the_checkpoint(tmp_path):
    output = tmp_path / "run"
    path = write_config(tmp_path / "fail.yaml", tiny_config_dict(output, train={"epochs": 3}))
    result = torchrun(WORKER, "fail", path, tmp_path)
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    root_cause = result.stderr[result.stderr.index("Root Cause"):]       # torchrun's summary
    assert "rank      : 1" in root_cause and "RuntimeError: injected failure on rank 1" in root_cause
    assert "[rank0]: Traceback" not in result.stderr                     # rank 0 only lost its peer
    state = load_checkpoint(str(output / "last.pt"))     # epoch 0's checkpoint, intact
    assert (state["epoch"], state["step"]) == (1, 0)


def our_lines(stderr: str) -> list:
    """The lines the ranks printed beside their logs: torchrun's own (its log lines, its summary, the
    launcher's ChildFailedError traceback) set aside."""
    summary = stderr.find("Traceback (most recent call last)")
    ours = stderr[:summary] if summary >= 0 else stderr
    return [line for line in ours.splitlines()
            if line.strip() and not re.match(r"[EWI]\d{4} |\d\d:\d\d:\d\d ", line)]   # torchrun's log, rank 0's log


def summary_failures(stderr: str) -> list:
    """(rank, exit status, message) of each failure in torchrun's summary."""
    return re.findall(r"rank      : (\d+) .*?\n  exitcode  : (-?\d+) .*?\n.*?\n  traceback : (.*)", stderr)


@pytest.mark.parametrize("override, named", [
    ("train.epochs=0", "key"), ("data.batch_size=33", "key"),      # refused at load; once the ranks met
    ("--foo", "--foo"),                                              # the command line, on every rank alike
])
def test_a_user_error_under_torchrun_is_one_line_and_exit_status_2(tmp_path, override, named):
    path = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run"))
    result = torchrun(os.path.join(ROOT, "train.py"), "--config", path, override)
    assert result.returncode != 0                        # torchrun's own status: 1 whatever its workers' are
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr[-3000:]
    assert result.stderr.count("Traceback (most recent call last)") == 1     # the launcher's; no rank's
    failures = summary_failures(result.stderr)
    assert {rank for rank, _, _ in failures} <= {"0", "1"} and failures, result.stderr[-3000:]
    # The rank that printed exits 2; so does the other, unless torchrun's agent stopped it (SIGTERM,
    # -15) while it was still starting: the agent stops every rank as soon as one has exited.
    assert "2" in [status for _, status, _ in failures] and {s for _, s, _ in failures} <= {"2", "-15"}, failures
    assert all(named in message for _, status, message in failures if status == "2"), failures


def test_a_user_error_on_one_rank_is_one_line_and_rank_0s_log_says_which_and_why(tmp_path):
    output = tmp_path / "run"
    path = write_config(tmp_path / "fail.yaml", tiny_config_dict(output, train={"epochs": 3}))
    result = torchrun(WORKER, "user_fail", path, tmp_path)
    assert result.returncode != 0
    assert our_lines(result.stderr) == ["error: injected user error on rank 1"], result.stderr[-3000:]
    failures = summary_failures(result.stderr)
    root_cause = result.stderr[result.stderr.index("Root Cause"):]
    assert "rank      : 1" in root_cause and "injected user error on rank 1" in root_cause
    assert all(status == "2" for _, status, _ in failures), failures
    with open(output / "train.log") as f:
        ending = f.read().splitlines()[-1]
    assert "rank 1 failed" in ending and "injected user error on rank 1" in ending, ending
    assert "Connection closed by peer" not in ending


def test_images_skipped_on_every_rank_are_reported_together(tmp_path):
    path = write_config(tmp_path / "skip.yaml", tiny_config_dict(tmp_path / "run"))
    result = torchrun(WORKER, "skipped", path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [line for line in result.stderr.splitlines() if "unreadable image(s)" in line]
    assert len(reports) == 1, result.stderr[-3000:]                  # rank 0 alone reports
    assert "epoch 0: 2 unreadable" in reports[0]
    assert "broken_on_rank0.png" in reports[0] and "broken_on_rank1.png" in reports[0]
