"""scripts/plot_reproduction.py: the REPRODUCTION figures from a paired study's evidence files (no
checkpoint), and the waterfall from a JSON of measured steps."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, error_lines, run_script
from engine.config import load_config, save_config
from tools.reproduction_figures import schedule_marks, waterfall_figure
from tools.run_layout import pair_folders

pytest.importorskip("matplotlib")

CONFIG = "configs/cpu_medium/cifar10_jpeg_lt_ldam_drw_rsg_r100.yaml"
COUNTS = [500, 300, 180, 100, 64, 38, 23, 14, 8, 5]


def fake_branch(folder, rsg: bool, seed: int, offset: float) -> None:
    """A branch's evidence as export_results leaves it: config.yaml, metrics.jsonl with per-class
    accuracies at the evaluated epochs, last.per_class.csv."""
    os.makedirs(folder)
    cfg = load_config(os.path.join(ROOT, CONFIG), [f"rsg.enabled={str(rsg).lower()}", f"train.seed={seed}"])
    save_config(cfg, os.path.join(folder, "config.yaml"))
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for epoch in (5, 11, 17, 23, 24, 25, 26, 27, 28, 29):
            per_class = [90.0 - 5 * c + offset + 0.1 * epoch for c in range(10)]
            f.write(json.dumps({"epoch": epoch, "test": {"top1": sum(per_class) / 10},
                                "test_per_class": per_class}) + "\n")
    with open(os.path.join(folder, "last.per_class.csv"), "w") as f:
        f.write("class,name,train_count,shot_group,test_images,accuracy\n")
        f.writelines(f"{c},class{c},{n},many,100,50.0\n" for c, n in enumerate(COUNTS))


def test_the_study_figures_are_drawn_from_its_evidence_files(tmp_path):
    for seed in (0, 1):
        folders = pair_folders(str(tmp_path / "study"), CONFIG, seed)
        fake_branch(folders["without_rsg"], False, seed, 0.0)
        fake_branch(folders["with_rsg"], True, seed, 2.0 + seed)
    result = run_script("scripts/plot_reproduction.py", tmp_path / "study", "--config", CONFIG, "--seeds", "0,1",
                        "--from-epoch", "20", "--out", tmp_path / "figures")
    assert result.returncode == 0, result.stderr
    for name in ("per_class_error.png", "test_error_curves.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 10_000


def test_the_schedule_marks_come_from_the_config():
    cfg = load_config(os.path.join(ROOT, CONFIG))
    from engine.config import config_to_dict

    assert schedule_marks(config_to_dict(cfg)) == [(24, "lr step, DRW, T_th"), (27, "lr step")]


def test_the_waterfall_draws_what_the_steps_leave_as_not_explained(tmp_path):
    waterfall = {"start": ["paper", 22.97], "steps": [["JPEG copy", 3.0, 0.5], ["init", 1.0, None]],
                 "end": ["ours", 29.02]}
    figure = waterfall_figure({"start": tuple(waterfall["start"]), "end": tuple(waterfall["end"]),
                               "steps": [tuple(s) for s in waterfall["steps"]]})
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels()]
    assert labels == ["paper", "JPEG copy", "init", "not explained", "ours"]
    heights = [round(patch.get_height(), 2) for patch in figure.axes[0].patches]
    assert heights == [22.97, 3.0, 1.0, 2.05, 29.02]          # 29.02 - 22.97 - 4.0 left unexplained
    path = tmp_path / "steps.json"
    path.write_text(json.dumps(waterfall))
    assert run_script("scripts/plot_reproduction.py", "--waterfall", path, "--out", tmp_path).returncode == 0
    path.write_text('{"start": 1}')
    result = run_script("scripts/plot_reproduction.py", "--waterfall", path, "--out", tmp_path)
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1
