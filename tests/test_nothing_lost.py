"""Nothing a user had is lost or silently changed, round two, each case through the command line as
a user meets it: a run stopped between last.pt and threshold.pt still gets its branch point, an
--overwrite removes only what a run wrote (and never follows a link out of the folder), and a
resume from another run's checkpoint into a new folder is refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import error_lines, read_jsonl, run_script, snapshot, tiny_config_dict, write_config

CLASSES = ("ant", "bee", "cat", "dog")
TRAIN_IMAGES = (16, 10, 7, 5)


def write_image_folder(root, test_per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split, counts in (("train", TRAIN_IMAGES), ("test", (test_per_class,) * len(CLASSES))):
        for index, (name, count) in enumerate(zip(CLASSES, counts)):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for number in range(count):
                pixels = rng.integers(0, 60, size=(16, 16, 3)) + 50 * index
                Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{number}.jpg"))


def image_folder_config(tmp_path, root, name="run", **sections):
    data = {"name": "image_folder", "root": str(root), "profile": "none", "max_per_class": 0,
            "image_size": 16, "crop_padding": 2, "decoder": "pil", "batch_size": 16}
    tree = tiny_config_dict(tmp_path / name, data=data, **sections)
    tree["rsg"]["frequent_ratio"] = 0.5                  # 2 of the 4 classes frequent
    return write_config(tmp_path / f"{name}.yaml", tree)


@pytest.mark.slow
def test_a_run_stopped_between_last_pt_and_threshold_pt_writes_it_when_resumed(tmp_path):
    """The evaluation after epoch T_th - 1 fails on a truncated test image: last.pt is saved, threshold.pt
    not. Once the image is fixed, --resume auto completes that epoch and writes threshold.pt, which a
    branch then starts from."""
    root = tmp_path / "images"
    write_image_folder(root)
    bad = root / "test" / "cat" / "1.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    config = image_folder_config(tmp_path, root, train={"epochs": 3}, rsg={"threshold_epoch": 1})
    folder = tmp_path / "run"
    failed = run_script("train.py", "--config", config, timeout=300)
    assert failed.returncode == 2 and str(bad) in failed.stderr, failed.stderr
    assert (folder / "last.pt").is_file() and not (folder / "threshold.pt").exists()
    bad.write_bytes(good)
    resumed = run_script("train.py", "--config", config, "--resume", "auto", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (folder / "threshold.pt").is_file()
    assert [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")] == [0, 1, 2]
    branch = run_script("train.py", "--config", config, "--branch-from", folder / "threshold.pt",
                        f"output_dir={tmp_path / 'branch'}", "rsg.enabled=false", timeout=300)
    assert branch.returncode == 0, branch.stderr


def users_files(folder) -> None:
    """What a user may keep in a folder before a run goes there: their own files under the names a
    run writes and its patterns, and inside its TensorBoard folder."""
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "tensorboard" / "mine.txt").write_text("my notes on the curves\n")
    (folder / "my.report.json").write_text('{"my": "numbers"}\n')
    (folder / "data.per_class.csv").write_text("class,count\n0,5\n")


@pytest.mark.slow
def test_overwrite_never_removes_nor_replaces_a_file_no_run_wrote(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root)
    folder = tmp_path / "run"
    users_files(folder)
    (folder / "config.yaml").write_text("lr: 0.1   # my own notes\n")
    (folder / "best.pt").write_bytes(b"my own weights")
    config = image_folder_config(tmp_path, root, train={"epochs": 1})
    before = snapshot(folder)
    for extra in ((), ("--overwrite",)):
        refused = run_script("train.py", "--config", config, *extra, timeout=300)
        lines = error_lines(refused.stderr)
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert "holds config.yaml, best.pt, which no run of this project wrote" in lines[0]
        assert snapshot(folder) == before
    os.rename(folder / "config.yaml", tmp_path / "config.yaml")       # the user moves them away
    os.rename(folder / "best.pt", tmp_path / "best.pt")
    assert run_script("train.py", "--config", config, "--overwrite", timeout=300).returncode == 0
    again = run_script("train.py", "--config", config, "--overwrite", "optim.lr=0.02", timeout=300)
    assert again.returncode == 0, again.stderr
    assert (folder / "tensorboard" / "mine.txt").read_text() == "my notes on the curves\n"
    assert (folder / "my.report.json").read_text() == '{"my": "numbers"}\n'
    assert (folder / "data.per_class.csv").read_text() == "class,count\n0,5\n"
    assert read_jsonl(folder / "metrics.jsonl")[0]["lr"] == pytest.approx(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log", "tensorboard"])
def test_a_run_never_writes_through_a_link_out_of_its_folder(tmp_path, name):
    root = tmp_path / "images"
    write_image_folder(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(outside if name == "tensorboard" else outside / "precious.txt", folder / name)
    config = image_folder_config(tmp_path, root, train={"epochs": 1})
    for extra in ((), ("--overwrite",)):
        result = run_script("train.py", "--config", config, *extra, timeout=300)
        assert result.returncode == 2 and f"holds {name}, which no run" in result.stderr, result.stderr
    assert os.listdir(outside) == ["precious.txt"] and (outside / "precious.txt").read_text() == "keep\n"


@pytest.mark.slow
def test_a_resume_from_another_runs_checkpoint_into_a_new_folder_is_refused(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root)
    config = image_folder_config(tmp_path, root, train={"epochs": 2})
    assert run_script("train.py", "--config", config, "train.epochs=1", timeout=300).returncode == 0
    other = tmp_path / "other"
    result = run_script("train.py", "--config", config, "--resume", tmp_path / "run" / "last.pt",
                        f"output_dir={other}", timeout=300)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "is a checkpoint of the run in" in lines[0] and "--branch-from" in lines[0]
    assert not other.exists()


# ---------------------------------------------------------------------------------------------
# The collector and the paired report: a number shown is the number of the files there now


def collector_main(*args):
    from tools import collect_results

    return collect_results.main([str(a) for a in args])


def test_a_report_of_an_earlier_best_pt_is_not_counted(tmp_path, capsys):
    """Table 8: eval.py measured best.pt, then the run went on and wrote a new best.pt; the old report
    names the old file's sha256, so the cell waits for eval.py instead of showing the old number."""
    import json

    from engine.checkpoint import file_sha256
    from test_tables import PLACES_COUNTS, PLACES_TEST_IMAGES, collect_one, evaluated_report, fake_run

    folder = fake_run(tmp_path / "rsg", "configs/places_lt/resnet152_ldam_drs_rsg.yaml", 0, [99.0])
    checkpoint = os.path.join(folder, "best.pt")
    with open(checkpoint, "wb") as f:
        f.write(b"the best.pt eval.py measured")
    report = evaluated_report(PLACES_COUNTS, PLACES_TEST_IMAGES).to_json()
    report["sha256"] = file_sha256(checkpoint)
    with open(os.path.join(folder, "best.report.json"), "w") as f:
        json.dump(report, f)
    assert collect_one(8, str(tmp_path))[2][("LDAM-DRS-RSG", "All")].values[0] == pytest.approx(report["top1"])
    with open(checkpoint, "wb") as f:
        f.write(b"a later, better best.pt")
    cell = collect_one(8, str(tmp_path))[2][("LDAM-DRS-RSG", "All")]
    assert cell.n == 0 and "measured another best.pt" in cell.notes[0] and "eval.py --checkpoint" in cell.notes[0]


def test_a_per_class_csv_older_than_best_pt_is_not_counted(tmp_path):
    from engine.evaluation import write_per_class_csv
    from test_tables import PLACES_COUNTS, PLACES_TEST_IMAGES, collect_one, evaluated_report, fake_run

    folder = fake_run(tmp_path / "rsg", "configs/places_lt/resnet152_ldam_drs_rsg.yaml", 0, [99.0])
    csv_path = os.path.join(folder, "best.per_class.csv")
    write_per_class_csv(csv_path, evaluated_report(PLACES_COUNTS, PLACES_TEST_IMAGES), [f"c{i}" for i in range(8)])
    with open(os.path.join(folder, "best.pt"), "wb") as f:
        f.write(b"newer")
    os.utime(csv_path, (1, 1))
    cell = collect_one(8, str(tmp_path))[2][("LDAM-DRS-RSG", "All")]
    assert cell.n == 0 and "older than best.pt" in cell.notes[0]


def test_a_runs_folder_that_does_not_exist_or_holds_no_run_is_an_error(tmp_path, capsys):
    document = tmp_path / "REPRODUCTION.md"
    from tools.collect_results import BEGIN, END

    document.write_text(f"# keep\n{BEGIN}\nold\n{END}\n")
    (tmp_path / "empty").mkdir()
    for runs in (tmp_path / "rnus", tmp_path / "empty"):
        assert collector_main(runs, "--all", "--reproduction", document) == 2
        error = capsys.readouterr().err
        assert str(runs) in error and ("does not exist" in error or "holds no run" in error)
        assert "regenerated" not in error
    assert document.read_text() == f"# keep\n{BEGIN}\nold\n{END}\n"


@pytest.mark.slow
def test_regenerating_never_replaces_a_reported_number_with_nothing_unasked(tmp_path, capsys):
    from test_tables import fake_run

    runs, other = tmp_path / "runs", tmp_path / "other"
    for seed in (0, 1, 2):
        fake_run(runs / f"erm{seed}", "configs/cifar10_lt/erm_r100.yaml", seed, [70.0])
    fake_run(other / "focal0", "configs/cifar10_lt/focal_r100.yaml", 0, [70.0])
    document = tmp_path / "REPRODUCTION.md"
    from tools.collect_results import BEGIN, END

    document.write_text(f"{BEGIN}\n{END}\n")
    assert collector_main(runs, "--all", "--reproduction", document) == 0
    reported = document.read_text()
    assert "final 30.00 ± 0.00" in reported
    capsys.readouterr()
    assert collector_main(other, "--all", "--reproduction", document) == 2
    error = capsys.readouterr().err
    assert "configs/cifar10_lt/erm_r100.yaml (final 30.00 ± 0.00" in error and "--drop-missing" in error
    assert document.read_text() == reported
    assert collector_main(other, "--all", "--reproduction", document, "--drop-missing") == 0
    assert "dropped the numbers of 1 config(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_the_collector_never_writes_over_a_users_file(tmp_path, capsys):
    from test_tables import fake_run

    fake_run(tmp_path / "runs" / "erm0", "configs/cifar10_lt/erm_r100.yaml", 0, [70.0])
    notes, table = tmp_path / "mynotes.md", tmp_path / "mytable.csv"
    notes.write_text("my notes\n")
    table.write_text("a,b\n1,2\n")
    for option, path in (("--markdown", notes), ("--csv", table)):
        assert collector_main(tmp_path / "runs", "--table", "6", option, path) == 2
        assert f"{option} {path} exists and is not a file the collector wrote" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n" and table.read_text() == "a,b\n1,2\n"
    ours_md, ours_csv = tmp_path / "t6.md", tmp_path / "t6.csv"
    for _ in range(2):      # its own files: written, then replaced by a second run
        assert collector_main(tmp_path / "runs", "--table", "6", "--markdown", ours_md, "--csv", ours_csv) == 0


def test_seeds_that_are_not_numbers_are_one_line(tmp_path, capsys):
    assert collector_main(tmp_path, "--table", "6", "--seeds", "a,b") == 2
    error = capsys.readouterr().err
    assert "--seeds" in error and "e.g. 0,1,2" in error and "Traceback" not in error and "invalid literal" not in error


@pytest.mark.slow
def test_export_to_a_file_is_one_line(tmp_path):
    destination = tmp_path / "results.txt"
    destination.write_text("mine\n")
    (tmp_path / "runs").mkdir()
    result = run_script("scripts/export_results.py", tmp_path / "runs", destination)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "is a file" in lines[0], result.stderr
    assert destination.read_text() == "mine\n"


def test_the_paired_report_names_branches_of_different_lengths_instead_of_comparing_them(tmp_path):
    from test_tables import fake_run
    from tools.pair_report import summary
    from tools.run_layout import pair_folders

    config = "configs/cifar10_lt/ldam_drw_rsg_r100.yaml"
    folders = pair_folders(str(tmp_path), config, 0)
    fake_run(folders["without_rsg"], "configs/cifar10_lt/ldam_drw_r100.yaml", 0, [70.0], overrides=["train.epochs=6"])
    fake_run(folders["with_rsg"], config, 0, [72.0], overrides=["train.epochs=4"])
    final = summary(config, [0], str(tmp_path)).split("\n\n")[0]
    assert "not compared: the branches end at different epochs (w/o at 5, w/ at 3)" in final
    assert "error -" in final.splitlines()[-1] and "-2.00" not in final


def test_the_collectors_paired_cells_leave_out_a_seed_whose_runs_end_apart(tmp_path):
    from test_tables import fake_run
    from tools import collect_results as collector
    from tools.table_index import get_table

    fake_run(tmp_path / "wo", "configs/cifar10_lt/ldam_drw_r100.yaml", 0, [70.0], overrides=["train.epochs=6"])
    fake_run(tmp_path / "w", "configs/cifar10_lt/ldam_drw_rsg_r100.yaml", 0, [72.0], overrides=["train.epochs=4"])
    (table, seeds, results), = collector.collect([get_table(6)], str(tmp_path))[0]
    text = collector.format_text(table, results, seeds)
    line = next(line for line in text.splitlines() if "LDAM-DRW vs LDAM-DRW-RSG, CIFAR-10 LT 100" in line)
    assert "seed 0 not compared: the runs end at different epochs (w/o 5, w/ 3)" in line and "-2.00" not in line


# ---------------------------------------------------------------------------------------------
# Image folders: what the transforms need, checked before training


@pytest.mark.slow
@pytest.mark.parametrize("where, size, words", [
    ("train", (1, 1), "at least 12 x 12"),
    ("test", (20, 16), "must be 16 x 16"),
])
def test_an_image_the_transforms_cannot_take_is_named_before_training(tmp_path, where, size, words):
    root = tmp_path / "images"
    write_image_folder(root)
    odd = root / where / "dog" / "0.jpg"
    Image.new("RGB", size, (90, 90, 90)).save(odd)
    config = image_folder_config(tmp_path, root, train={"epochs": 1})
    for script, args in (("train.py", ("--config", config)),):
        result = run_script(script, *args, timeout=300)
        lines = error_lines(result.stderr)
        assert result.returncode == 2 and str(odd) in lines[-1] and words in lines[-1], result.stderr
        assert "epoch" not in result.stderr.split("error:")[0].split("\n", 1)[-1]     # before any epoch
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# A second Ctrl-C while a checkpoint is written


def zip_writer_interrupted(*args, **kwargs):
    """What torch.save raises when a SIGINT arrives while it writes: its zip writer's RuntimeError,
    with the KeyboardInterrupt as its context."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2432 vs 2326")


def test_an_interrupt_while_a_checkpoint_is_written_is_an_interrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    import torch

    from engine import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint({"old": 1}, str(path))
    monkeypatch.setattr(checkpoint.torch, "save", zip_writer_interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint({"new": 2}, str(path))
    assert torch.load(path) == {"old": 1} and os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.slow
def test_a_second_ctrl_c_while_last_pt_is_written_ends_in_one_line_and_exit_130(tmp_path, monkeypatch):
    from conftest import torch_globals_restored
    from engine import checkpoint
    from engine.config import load_config
    from engine.run import fit

    config = write_config(tmp_path / "c.yaml", tiny_config_dict(tmp_path / "run"))
    monkeypatch.setattr(checkpoint.torch, "save", zip_writer_interrupted)
    with torch_globals_restored(), pytest.raises(SystemExit) as stopped:
        fit(load_config(config))
    assert stopped.value.code == 130
    log = (tmp_path / "run" / "train.log").read_text()
    assert "stopped at once by a second interrupt, nothing saved" in log
    assert "cannot write the checkpoint" not in log
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_the_paired_report_of_a_folder_that_does_not_exist_is_an_error(tmp_path):
    result = run_script("scripts/rsg_pair.py", "--config", "configs/cpu_medium/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml",
                        "--output-root", tmp_path / "resluts", "--report")
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and "does not exist" in lines[0], result.stderr
