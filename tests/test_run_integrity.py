"""Nothing a user does loses a run or splices two (docs/USAGE.md, "Run folders"): eval.py writes only
its own files, --overwrite clears every file a run writes, a folder is the same folder however its
path is spelled, a metrics.jsonl line cut by a crash is dropped and reported, a broken parent is
refused before anything is written, and an early Ctrl-C ends in one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

import engine.run as engine_run
from conftest import (ROOT, SCRIPT_ENV, error_lines, read_jsonl, run_script, script_command, snapshot,
                      tiny_config_dict, torch_globals_restored, write_config)
from core.errors import UserError
from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.run import fit
from engine.run_folder import check_ownership, last_finished_epoch, remove_run_files


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run (RSG from epoch 1: threshold.pt at epoch 1), never changed by a test:
    each copies it first (`copy_run`)."""
    tmp = tmp_path_factory.mktemp("finished")
    path = write_config(tmp / "run.yaml", tiny_config_dict(tmp / "run"))
    with torch_globals_restored():
        fit(load_config(path))
    return tmp / "run"


def copy_run(finished, tmp_path, name: str = "run"):
    """A copy of the finished run and the config that trains into it: (folder, config path)."""
    folder = tmp_path / name
    shutil.copytree(finished, folder)
    return folder, write_config(tmp_path / f"{name}.yaml", tiny_config_dict(folder))


def cut_last_line(path, characters: int = 40) -> None:
    """What a crash while the line was written leaves: the last line without its end."""
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:-characters])


def cut_file(path, size: int = 1000) -> None:
    with open(path, "rb") as f:
        content = f.read(size)
    with open(path, "wb") as f:
        f.write(content)


# ---------------------------------------------------------------------------------------------
# Item 1: eval.py writes only new files and its own


@pytest.mark.slow
def test_eval_never_writes_over_a_checkpoint_or_a_file_it_did_not_make(finished, tmp_path):
    folder, _ = copy_run(finished, tmp_path)
    notes = tmp_path / "notes.csv"
    notes.write_text("my own table\n")
    before = snapshot(folder)
    for output in (folder / "last.pt", folder / "config.yaml", notes):
        result = run_script("eval.py", "--checkpoint", folder / "best.pt", "--output", output)
        lines = error_lines(result.stderr)
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert str(output) in lines[0] and "--output" in lines[0]
    assert snapshot(folder) == before and notes.read_text() == "my own table\n"
    for _ in range(2):      # the default names beside the checkpoint: written, then replaced by a rerun
        assert run_script("eval.py", "--checkpoint", folder / "best.pt").returncode == 0
    assert (folder / "best.per_class.csv").is_file() and (folder / "best.report.json").is_file()


@pytest.mark.slow
def test_eval_does_not_replace_the_evaluation_of_another_checkpoint(finished, tmp_path):
    """eval.py's own files are its to replace only for the checkpoint they report on: run A's best.pt
    evaluated with --output B/best.per_class.csv must not pass A's numbers off as B's."""
    run_a, _ = copy_run(finished, tmp_path, "a")
    run_b, _ = copy_run(finished, tmp_path, "b")
    assert run_script("eval.py", "--checkpoint", run_b / "best.pt").returncode == 0
    before = snapshot(run_b)
    result = run_script("eval.py", "--checkpoint", run_a / "best.pt", "--output", run_b / "best.per_class.csv")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(run_b / "best.pt") in lines[0] and "--output" in lines[0]
    assert snapshot(run_b) == before
    own = tmp_path / "mine.per_class.csv"     # a name of the user's: its own checkpoint re-evaluates into it
    for _ in range(2):
        assert run_script("eval.py", "--checkpoint", run_a / "best.pt", "--output", own).returncode == 0
    result = run_script("eval.py", "--checkpoint", run_b / "best.pt", "--output", own)
    assert result.returncode == 2 and str(run_a / "best.pt") in result.stderr


# ---------------------------------------------------------------------------------------------
# Item 2: --overwrite clears every file a run writes


EVAL_CSV = ",".join(("class", "name", "train_count", "shot_group", "test_images", "accuracy")) + "\n0,a,5,many,3,66.7\n"


@pytest.mark.slow
def test_overwrite_clears_every_file_a_run_writes(finished, tmp_path):
    """Every kind of file a run (and eval.py, and the table runner) writes, each with its real content."""
    folder, _ = copy_run(finished, tmp_path)
    assert {"config.yaml", "last.pt", "best.pt", "threshold.pt", "metrics.jsonl", "train.log",
            "tensorboard"} <= set(os.listdir(folder))
    (folder / "branch.json").write_text('{"sha256": "ab", "epoch": 1}\n')
    (folder / "best.per_class.csv").write_text(EVAL_CSV)
    (folder / "best.report.json").write_text('{"per_class": [66.7]}\n')
    (folder / "best.posthoc.json").write_text('{"by_tau": {}}\n')
    (folder / "eval_test.txt").write_text("top-1 error 20.00% (the measure of Tables 1-7)\n")
    shutil.copy(folder / "last.pt", folder / "last.pt.tmp.123")
    (folder / "notes.txt").write_text("mine\n")
    remove_run_files(str(folder))
    assert sorted(os.listdir(folder)) == [".lock", "notes.txt"]     # the lock: held by the run that overwrites


def test_overwrite_clears_an_evaluation_written_under_a_name_of_the_users(tmp_path):
    """eval.py --output RUN/mine.csv writes mine.csv beside mine.report.json: both are the old run's
    evaluation. A CSV of the user's (another header), even beside a report, stays."""
    eval_csv = EVAL_CSV
    (tmp_path / "mine.csv").write_text(eval_csv)
    (tmp_path / "mine.report.json").write_text('{"per_class": [66.7]}\n')
    (tmp_path / "bare").write_text(eval_csv)              # --output RUN/bare: no extension
    (tmp_path / "bare.report.json").write_text('{"per_class": [66.7]}\n')
    (tmp_path / "table.csv").write_text("epoch,top1\n0,50\n")
    (tmp_path / "table.report.json").write_text('{"per_class": [50.0]}\n')
    removed = remove_run_files(str(tmp_path))
    assert sorted(removed) == ["bare", "bare.report.json", "mine.csv", "mine.report.json", "table.report.json"]
    assert sorted(os.listdir(tmp_path)) == ["table.csv"]


@pytest.mark.slow
def test_an_overwritten_run_leaves_no_threshold_checkpoint_to_branch_from(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    (folder / "branch.json").write_text('{"sha256": "ab", "epoch": 1}\n')
    with torch_globals_restored():
        fit(load_config(path, ["train.epochs=1", "rsg.enabled=false"]), overwrite=True)
    assert not (folder / "threshold.pt").exists() and not (folder / "branch.json").exists()


# ---------------------------------------------------------------------------------------------
# Item 3: a folder is the same folder whatever path names it


@pytest.mark.slow
def test_a_branch_into_a_symlink_to_its_parents_folder_is_refused(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    link = tmp_path / "link"
    link.symlink_to(folder)
    before = snapshot(folder)
    with pytest.raises(UserError, match="parent's folder"):
        fit(load_config(path, [f"output_dir={link}", "train.epochs=3"]), overwrite=True,
            branch_from=str(folder / "threshold.pt"))
    assert snapshot(folder) == before


def test_resume_from_the_folders_checkpoint_by_another_path_continues_that_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("name: x\noutput_dir: run\ndata: {}\nmodel: {}\ntrain: {}\n")
    link = tmp_path / "link"
    link.symlink_to(folder)
    check_ownership(str(link), str(folder / "last.pt"), False)      # the folder's own run: no refusal
    check_ownership(str(folder), str(link / "last.pt"), False)


# ---------------------------------------------------------------------------------------------
# Item 4: metrics.jsonl holds whole records


@pytest.mark.slow
def test_a_cut_metrics_line_is_dropped_and_reported_on_resume(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    cut_last_line(folder / "metrics.jsonl")
    with torch_globals_restored():
        fit(load_config(path), resume="auto")
    assert [record["epoch"] for record in read_jsonl(folder / "metrics.jsonl")] == [0, 1]
    log = (folder / "train.log").read_text()
    assert "metrics.jsonl ended in a line cut short" in log
    assert "evaluation did not finish" not in log      # the epoch was evaluated; its line was cut


def test_every_metrics_reader_tolerates_a_cut_last_line(tmp_path):
    from tools.collect_results import read_run
    from tools.plot_rsg_diagnostics import read_records

    (tmp_path / "config.yaml").write_text("name: x\ntrain: {epochs: 3}\ndata: {}\n")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "train": {}}\n{"epoch": 1, "train": {}}\n{"epoch": 2, "tr')
    assert last_finished_epoch(str(tmp_path)) == 1
    assert [record["epoch"] for record in read_run(str(tmp_path)).metrics] == [0, 1]
    assert [record["epoch"] for record in read_records(str(tmp_path))] == [0, 1]


# ---------------------------------------------------------------------------------------------
# Item 10: a parent is checked before the branch claims its folder


@pytest.mark.slow
@pytest.mark.parametrize("broken, checkpoint, named", [
    ("metrics.jsonl", "last.pt", "metrics.jsonl"),      # the cut line is epoch 1's, which the branch inherits
    ("best.pt", "threshold.pt", "best.pt"),             # best.pt is the best of the epochs the branch inherits
])
def test_a_branch_from_a_broken_parent_is_refused_before_its_folder_is_made(finished, tmp_path, broken,
                                                                             checkpoint, named):
    folder, path = copy_run(finished, tmp_path)
    (cut_last_line if broken == "metrics.jsonl" else cut_file)(folder / broken)
    branch = tmp_path / "branch"
    with pytest.raises(UserError) as info:
        fit(load_config(path, [f"output_dir={branch}", "train.epochs=3"]), branch_from=str(folder / checkpoint))
    message = str(info.value)
    assert "\n" not in message and str(folder / named) in message
    assert not branch.exists()


@pytest.mark.slow
def test_a_cut_line_after_the_branch_point_does_not_stop_a_branch(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    cut_last_line(folder / "metrics.jsonl")                 # epoch 1's line; threshold.pt is at epoch 1
    branch = tmp_path / "branch"
    with torch_globals_restored():
        fit(load_config(path, [f"output_dir={branch}"]), branch_from=str(folder / "threshold.pt"))
    assert [record["epoch"] for record in read_jsonl(branch / "metrics.jsonl")] == [0, 1]


# ---------------------------------------------------------------------------------------------
# Item 11: a corrupt best.pt is named


@pytest.mark.slow
def test_resume_with_a_corrupt_best_checkpoint_names_it_in_one_line(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    cut_file(folder / "best.pt")
    with pytest.raises(UserError) as info:
        with torch_globals_restored():
            fit(load_config(path, ["train.epochs=3"]), resume="auto")
    message = str(info.value)
    assert "\n" not in message and str(folder / "best.pt") in message and "move it aside" in message
    assert load_checkpoint(str(folder / "last.pt"))["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# Item 12: a Ctrl-C before the stop handler is installed


def interrupts(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupt_after_the_claim_ends_in_one_line_in_train_log(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run")))
    monkeypatch.setattr(engine_run, "MetricsLog", interrupts)     # the folder is claimed just before
    with pytest.raises(SystemExit) as info:
        with torch_globals_restored():
            fit(cfg)
    assert info.value.code == 130
    last = (tmp_path / "run" / "train.log").read_text().rstrip("\n").splitlines()[-1]
    assert "interrupted before training started" in last and "--resume auto" in last


def test_an_interrupt_before_the_claim_ends_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run")))
    monkeypatch.setattr(engine_run, "build_run", interrupts)
    with pytest.raises(SystemExit) as info:
        with torch_globals_restored():
            fit(cfg)
    assert info.value.code == 130 and not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("train.py", ["--config", "configs/quickstart.yaml"]),
    ("eval.py", ["--checkpoint", "absent.pt"]),
    ("scripts/rsg_pair.py", ["--config", "configs/quickstart.yaml", "--dry-run"]),
])
def test_an_interrupt_while_the_modules_load_ends_without_a_traceback(tmp_path, script, args):
    """Loading torch takes seconds: a Ctrl-C then used to print a traceback through the imports."""
    process = subprocess.Popen(script_command(script, *args, f"output_dir={tmp_path / 'run'}"), cwd=ROOT,
                               env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted" in stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Found in the replay: a --resume path that is no file is named as such, even into a used folder


@pytest.mark.slow
def test_a_resume_path_that_is_no_file_is_named_before_the_folder_is_judged(finished, tmp_path):
    folder, path = copy_run(finished, tmp_path)
    before = snapshot(folder)
    with pytest.raises(UserError, match="--resume: checkpoint not found: yes") as info:
        fit(load_config(path), resume="yes")
    assert "auto" in str(info.value) and snapshot(folder) == before
