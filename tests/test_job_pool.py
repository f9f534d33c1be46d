"""scripts/job_pool.py with small Python commands standing in for training runs: slots and their
environment, how many run at once, failures, the captured evaluation output, and signals.
(tests/test_table_runner.py runs real tiny trainings through the table scripts.)"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

import pytest

from core.errors import UserError
from tools import job_pool
from tools.job_pool import FAILED, FINISHED, INTERRUPTED, NOT_STARTED, Task, device_slots, run_tasks, summary

# A stand-in run: prints its device and threads, records when it ran, sleeps, exits with a status.
# On SIGINT it writes "saved" (as train.py saves last.pt) and exits 130.
FAKE_RUN = """
import os, signal, sys, time
def stop(number, frame):
    open(sys.argv[1] + ".saved", "w").close()
    sys.exit(128 + number)
signal.signal(signal.SIGINT, stop)
print("devices", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), "threads", os.environ.get("OMP_NUM_THREADS"), flush=True)
start = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    f.write(f"{start} {time.time()}")
status = int(sys.argv[3])
if status:
    print("error: this run was made to fail", file=sys.stderr)
sys.exit(status)
"""


def fake_task(tmp_path, name: str, seconds: float = 0.3, status: int = 0) -> Task:
    marker = str(tmp_path / name)
    return Task(marker, [([sys.executable, "-c", FAKE_RUN, marker, str(seconds), str(status)], None)],
                log=marker + ".log")


def intervals(tasks) -> list[tuple[float, float]]:
    spans = []
    for task in tasks:
        if os.path.exists(task.name):
            with open(task.name) as f:
                spans.append(tuple(map(float, f.read().split())))
    return spans


def most_at_once(spans) -> int:
    return max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)


def test_slots_pin_each_run_to_one_gpu_with_a_share_of_the_cores():
    slots = device_slots(2, 3, ["4", "GPU-5a"], cores=12)
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in slots] == ["4", "GPU-5a"] * 3   # alternating GPUs
    assert {slot.env["OMP_NUM_THREADS"] for slot in slots} == {"2"} and slots[1].label == "GPU GPU-5a"
    cpu = device_slots(0, 3, [], cores=2)
    assert len(cpu) == 3 and all(s.env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                           "CUDA_VISIBLE_DEVICES": ""} for s in cpu)
    assert device_slots(1, 1, ["0"], cores=16)[0].env["OMP_NUM_THREADS"] == "16"
    with pytest.raises(ValueError, match="3 GPUs asked for, 2 visible"):
        device_slots(3, 1, ["0", "1"], cores=4)


@pytest.mark.slow
def test_n_at_a_time_and_a_failure_does_not_stop_the_others(tmp_path):
    tasks = [fake_task(tmp_path, f"run{i}", status=3 if i == 1 else 0) for i in range(5)]
    out = io.StringIO()
    outcomes, status = run_tasks(tasks, device_slots(2, 1, ["7", "9"], cores=4), out=out)
    assert status == 1
    assert [o.status for o in outcomes] == [FINISHED, FAILED, FINISHED, FINISHED, FINISHED]
    assert outcomes[1].exit_status == 3 and outcomes[1].error == "error: this run was made to fail"
    assert most_at_once(intervals(tasks)) == 2
    for task in tasks:
        with open(task.log) as f:
            log = f.read()
        device = log.split("devices '")[1][0]
        assert f"on GPU {device} (CUDA_VISIBLE_DEVICES={device} MKL_NUM_THREADS=2 OMP_NUM_THREADS=2)" in log
        assert "threads 2" in log
    assert {open(t.log).read().split("devices '")[1][0] for t in tasks} == {"7", "9"}
    text = out.getvalue()
    assert "FAILED 2/5" in text and f"log {tasks[1].log}" in text and text.count("finish ") == 4
    lines = summary(outcomes, done_before=2)
    assert lines[0] == "summary: 4 finished, 1 failed, 0 left (0 interrupted, 0 not started); 2 were done already"
    assert lines[1] == (f"  failed: {tasks[1].name} (exit status 3): error: this run was made to fail; "
                        f"see {tasks[1].log}")


@pytest.mark.slow
def test_one_slot_runs_them_one_after_another(tmp_path):
    tasks = [fake_task(tmp_path, f"run{i}", seconds=0.2) for i in range(3)]
    outcomes, status = run_tasks(tasks, device_slots(0, 1, [], cores=2), out=io.StringIO())
    assert status == 0 and most_at_once(intervals(tasks)) == 1
    assert summary(outcomes) == ["summary: 3 finished, 0 failed, 0 left (0 interrupted, 0 not started)"]


@pytest.mark.slow
def test_fail_fast_stops_the_others_with_their_checkpoints(tmp_path):
    tasks = [fake_task(tmp_path, "slow", seconds=30), fake_task(tmp_path, "bad", status=2),
             fake_task(tmp_path, "later")]
    started = time.time()
    outcomes, status = run_tasks(tasks, device_slots(0, 2, [], cores=2), fail_fast=True, out=io.StringIO())
    assert time.time() - started < 20
    assert [o.status for o in outcomes] == [INTERRUPTED, FAILED, NOT_STARTED] and status == 1
    assert os.path.exists(tasks[0].name + ".saved")
    lines = summary(outcomes)
    assert lines[0] == "summary: 0 finished, 1 failed, 2 left (1 interrupted, 1 not started)"
    assert lines[-1].startswith("Run the same command again")


def test_evaluation_output_is_kept_only_when_the_step_succeeds(tmp_path):
    table = tmp_path / "eval_test.txt"
    ok = Task("ok", [([sys.executable, "-c", "print('top-1 50.0')"], str(table))], log=str(tmp_path / "ok.log"))
    outcomes, status = run_tasks([ok], device_slots(0, 1, [], cores=1), out=io.StringIO())
    assert status == 0 and table.read_text() == "top-1 50.0\n"
    bad = tmp_path / "bad.txt"
    failing = Task("bad", [([sys.executable, "-c", "print('half'); raise SystemExit(1)"], str(bad))],
                   log=str(tmp_path / "bad.log"))
    first = Task("two steps", [([sys.executable, "-c", "raise SystemExit(4)"], None),
                               ([sys.executable, "-c", "open('never', 'w')"], None)], log=str(tmp_path / "two.log"))
    outcomes, status = run_tasks([failing, first], device_slots(0, 2, [], cores=2), out=io.StringIO())
    assert [o.status for o in outcomes] == [FAILED, FAILED] and outcomes[1].exit_status == 4
    assert not bad.exists() and not os.path.exists("never")


def test_a_silent_failure_quotes_nothing_but_its_own_output(tmp_path):
    """A command that fails without printing has no error line: the pool's own header line in the
    log (and an earlier attempt's output above it) is not the failure's message."""
    log = tmp_path / "silent.log"
    log.write_text("error: an earlier attempt's message\n")
    silent = Task("silent", [([sys.executable, "-c", "raise SystemExit(5)"], None)], log=str(log))
    out = io.StringIO()
    outcomes, status = run_tasks([silent], device_slots(0, 1, [], cores=1), out=out)
    assert outcomes[0].status == FAILED and outcomes[0].error == ""
    assert "FAILED 1/1 silent (exit status 5) after" in out.getvalue() and "===" not in out.getvalue()
    assert summary(outcomes)[1] == f"  failed: silent (exit status 5); see {log}"


def test_terminal_mode_prints_the_command_and_the_evaluation(tmp_path, capfd):
    """Without a log (one run at a time, as before --jobs-per-gpu) the run's output is the terminal's."""
    table = tmp_path / "table.txt"
    task = Task("run", [([sys.executable, "-c", "import sys; print('training', file=sys.stderr)"], None),
                        ([sys.executable, "-c", "print('many 1.0')"], str(table))], note="resumes after epoch 3")
    out = io.StringIO()
    outcomes, status = run_tasks([task], device_slots(0, 1, [], cores=1), out=out)
    assert status == 0 and table.read_text() == "many 1.0\n"
    assert "start 1/1 run on CPU (resumes after epoch 3)" in out.getvalue() and "many 1.0" in out.getvalue()
    assert "training" in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_signal_to_the_runner_stops_every_run_once(tmp_path):
    tasks = [fake_task(tmp_path, f"run{i}", seconds=30) for i in range(3)]
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        outcomes, status = run_tasks(tasks, device_slots(0, 2, [], cores=2), out=io.StringIO())
    finally:
        timer.cancel()
    assert status == 128 + signal.SIGINT
    assert [o.status for o in outcomes] == [INTERRUPTED, INTERRUPTED, NOT_STARTED]
    assert os.path.exists(tasks[0].name + ".saved") and os.path.exists(tasks[1].name + ".saved")
    assert signal.getsignal(signal.SIGINT) is before      # the previous handler is back


def test_commands_file_runs_each_line_with_its_own_log(tmp_path, capsys):
    commands = tmp_path / "commands.txt"
    commands.write_text(f"# two stand-in runs\n{sys.executable} -c 'print(\"first\")' output_dir={tmp_path}/a\n\n"
                        f"{sys.executable} -c 'raise SystemExit(5)'\n")
    assert job_pool.main([str(commands), "--gpus", "0", "--jobs-per-gpu", "2"]) == 1
    assert "first" in (tmp_path / "a.log").read_text()
    assert (tmp_path / "commands.txt.line4.log").exists()
    err = capsys.readouterr().err
    assert "2 commands, 2 at a time on CPU x2" in err
    assert "summary: 1 finished, 1 failed, 0 left" in err and f"failed: {commands}:4 (exit status 5)" in err
    assert job_pool.main([str(tmp_path / "missing.txt")]) == 2
    assert "error: commands file not found" in capsys.readouterr().err


def test_a_commands_files_summary_names_the_lines_to_run_again(tmp_path, capsys):
    """The pool knows nothing of a raw command's run: running the file again would rerun the finished
    lines too, so the hint names the others instead of promising that finished runs are skipped."""
    commands = tmp_path / "commands.txt"
    commands.write_text(f"{sys.executable} -c 'pass'\n{sys.executable} -c 'raise SystemExit(3)'\n")
    assert job_pool.main([str(commands), "--gpus", "0"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"Running {commands} again reruns every line, finished ones too: to go on, run only its line 2 "
        f"(train.py continues a run only with --resume auto).")


def test_runner_slots_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    slots = job_pool.runner_slots(None, 2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["3", "5", "3", "5"]
    assert job_pool.describe_slots(slots).startswith("4 at a time on GPU 3 x2, GPU 5 x2")
    with pytest.raises(UserError, match=r"--gpus 3: 2 CUDA devices are visible \(CUDA_VISIBLE_DEVICES=3,5\); "
                                        r"use --gpus 2 or fewer"):
        job_pool.runner_slots(3, 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")       # CUDA's way of hiding every GPU
    assert [s.label for s in job_pool.runner_slots(None, 2)] == ["CPU", "CPU"]
    assert job_pool.runner_slots(None, None)[0].env == {}   # one run at a time: the environment untouched
    assert job_pool.runner_slots(0, None)[0].env == {"CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(UserError, match="--jobs-per-gpu 0"):
        job_pool.runner_slots(1, 0)


@pytest.mark.slow
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_signals_are_forwarded_once_each_and_the_third_kills(tmp_path):
    """A command that counts the SIGINTs it gets and ignores them: it sees the runner's first and
    second, one each (not also the terminal's), and the third signal becomes SIGKILL."""
    counted = tmp_path / "count"
    stubborn = (f"import signal, time\nn = 0\ndef count(*_):\n    global n\n    n += 1\n"
                f"    open({str(counted)!r}, 'w').write(str(n))\nsignal.signal(signal.SIGINT, count)\n"
                "time.sleep(60)\ntime.sleep(60)\ntime.sleep(60)\n")
    task = Task("stubborn", [([sys.executable, "-c", stubborn], None)], log=str(tmp_path / "stubborn.log"))
    timers = [threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)) for delay in (1.5, 2.5, 3.5)]
    for timer in timers:
        timer.start()
    started = time.time()
    try:
        outcomes, status = run_tasks([task], device_slots(0, 1, [], cores=1), out=io.StringIO())
    finally:
        for timer in timers:
            timer.cancel()
    assert time.time() - started < 30
    assert counted.read_text() == "2"
    assert outcomes[0].status == INTERRUPTED and status == 128 + signal.SIGINT


@pytest.mark.parametrize("argv", [["--gpus", "-1"], ["--jobs-per-gpu", "0"], ["--jobs-per-gpu", "-2"]])
def test_the_runners_refuse_a_negative_gpu_count_or_no_jobs_per_gpu_when_reading_arguments(argv, capsys):
    """Refused when the arguments are read, so a --dry-run (which starts nothing) is refused too."""
    from tools import paper_tables
    for main, args in ((paper_tables.main, ["--table", "6", "--dry-run", *argv]),
                       (job_pool.main, ["commands.txt", *argv])):
        assert main(args) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and f"argument {argv[0]}" in lines[0] and argv[1] in lines[0], lines
