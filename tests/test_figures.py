"""Figures from a tiny run (scripts/plot_per_class.py, scripts/plot_features.py, tools/figures.py),
and the TensorBoard hparams every run writes at its end."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
import torch

from conftest import run_scripts, script_command, tiny_config_dict, write_config
from core.errors import UserError
from tools.figures import binned_means, pca_2d, require_pyplot

pytest.importorskip("matplotlib")

from tools import plot_features, plot_per_class  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny LDAM-DRW-RSG run on the digits (2 epochs, RSG generating from epoch 1) and a
    1-epoch baseline without RSG, trained at once."""
    tmp = tmp_path_factory.mktemp("figures")
    configs = {"rsg": tiny_config_dict(tmp / "rsg"),
               "baseline": tiny_config_dict(tmp / "baseline", rsg={"enabled": False}, train={"epochs": 1})}
    paths = [write_config(tmp / f"{name}.yaml", tree) for name, tree in configs.items()]
    for name, result in zip(configs, run_scripts([script_command("train.py", "--config", p) for p in paths])):
        assert result.returncode == 0, f"{name}: {result.stderr}"
    return {name: str(tmp / name) for name in configs}


def tensorboard_events(run_dir: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(run_dir, "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def assert_non_trivial_png(path) -> None:
    import matplotlib.image

    assert os.path.getsize(path) > 10_000
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels[..., :3].std() > 0.05                    # not a blank canvas


@pytest.mark.slow
def test_per_class_plot_of_a_run_and_its_baseline(runs, tmp_path, capsys, restore_torch_globals):
    out = tmp_path / "per_class.png"
    assert plot_per_class.main([runs["rsg"], runs["baseline"], "--out", str(out)]) == 0
    assert_non_trivial_png(out)
    for run in runs.values():           # the source: eval.py's per-class CSV, written when missing
        assert os.path.isfile(os.path.join(run, "last.per_class.csv"))
    assert "figures/per_class_accuracy" in tensorboard_events(runs["rsg"]).Tags()["images"]


@pytest.mark.slow
def test_feature_plot_shows_frequent_rare_and_generated_samples(runs, tmp_path, capsys, restore_torch_globals):
    out = tmp_path / "features.png"
    assert plot_features.main(["--checkpoint", os.path.join(runs["rsg"], "last.pt"), "--batches", "3",
                               "--out", str(out)]) == 0
    counts = dict(re.findall(r"(frequent|rare|generated) (\d+)", capsys.readouterr().out))
    assert int(counts["frequent"]) > 0 and int(counts["rare"]) > 0 and int(counts["generated"]) > 0
    assert int(counts["frequent"]) + int(counts["rare"]) == 3 * 32      # 3 batches of 32 real samples
    assert_non_trivial_png(out)
    assert "figures/rsg_features" in tensorboard_events(runs["rsg"]).Tags()["images"]


@pytest.mark.slow
def test_feature_plot_needs_a_run_with_rsg(runs, capsys, restore_torch_globals):
    assert plot_features.main(["--checkpoint", os.path.join(runs["baseline"], "last.pt"), "--no-tensorboard"]) == 2
    assert "trained without RSG" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_matplotlib_is_one_clear_error(monkeypatch, capsys, runs):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib now raises ImportError
    with pytest.raises(UserError, match="pip install matplotlib"):
        require_pyplot()
    assert plot_per_class.main([runs["rsg"]]) == 2
    assert "need matplotlib, which is not installed" in capsys.readouterr().err


def test_pca_projects_onto_the_two_widest_directions():
    generator = torch.Generator().manual_seed(0)
    wide = torch.randn(200, 6, generator=generator) * torch.tensor([10.0, 5.0, 0.1, 0.1, 0.1, 0.1])
    points = pca_2d({"a": wide[:120], "b": wide[120:]})
    assert points["a"].shape == (120, 2) and points["b"].shape == (80, 2)
    projected = torch.cat([points["a"], points["b"]])
    assert projected.mean(dim=0).abs().max() < 1e-4
    assert projected.var(dim=0).sum() / wide.var(dim=0).sum() > 0.999


def test_binned_means_on_a_log_axis():
    counts = np.array([500, 400, 100, 50, 10, 5])
    accuracies = np.array([90.0, 80.0, 60.0, 40.0, 20.0, 0.0])
    centres, means = binned_means(counts, accuracies, bins=3)
    assert len(centres) == len(means) <= 3
    assert np.all(np.diff(centres) > 0) and means[0] == pytest.approx(10.0) and means[-1] == pytest.approx(85.0)


@pytest.mark.slow
def test_runs_write_their_hparams_to_tensorboard(runs):
    """Config keys and final metrics, for TensorBoard's HPARAMS view (engine.metrics_log.MetricsLog.hparams)."""
    import json

    from tensorboard.plugins.hparams import plugin_data_pb2

    events = tensorboard_events(runs["rsg"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss.name"].string_value == "ldam"
    assert hparams["rsg.threshold_epoch"].number_value == 1
    assert hparams["optim.milestones"].string_value == "[1, 2]"             # lists as text
    with open(os.path.join(runs["rsg"], "metrics.jsonl")) as f:
        final = json.loads(f.read().splitlines()[-1])["test"]
    assert events.Scalars("hparams/top1")[-1].value == pytest.approx(final["top1"])


def test_log_axis_ticks_are_plain_and_never_run_together():
    from tools.figures import one_two_five_label

    assert [one_two_five_label(v) for v in (1, 2, 5, 10, 20, 50, 100, 500)] == \
        ["1", "2", "5", "10", "20", "50", "100", "500"]
    assert [one_two_five_label(v) for v in (3, 40, 60, 70, 80, 90, 300)] == [""] * 7


def test_the_legend_sits_beside_the_curves_not_on_them(tmp_path):
    from tools.figures import per_class_figure

    counts = np.array([500, 300, 120, 60, 30, 15, 8, 4])
    series = [("LDAM-DRW-RSG", counts, np.linspace(95, 20, 8)), ("LDAM-DRW", counts, np.linspace(96, 5, 8))]
    figure = per_class_figure(series, "a run and its baseline")
    figure.canvas.draw()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    legend = axes.get_legend().get_window_extent(renderer)
    plot_area = axes.get_window_extent(renderer)
    assert legend.x0 >= plot_area.x1                      # wholly to the right of the plotting area
    assert legend.x1 <= figure.bbox.x1 + 1                 # and not cut off
    labels = [t.get_text() for t in axes.xaxis.get_ticklabels(minor=True) if t.get_text()]
    assert "60" not in labels and "90" not in labels
    figure.savefig(tmp_path / "per_class.png", dpi=80)


@pytest.mark.slow
def test_feature_figure_title_names_the_checkpoints_epoch(runs, tmp_path, capsys, restore_torch_globals):
    from engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(os.path.join(runs["rsg"], "last.pt"))
    state["epoch"] = 1                                      # a 1-epoch checkpoint of a run with T_th = 5
    state["config"]["rsg"]["threshold_epoch"] = 5
    one_epoch = tmp_path / "one_epoch.pt"
    save_checkpoint(state, str(one_epoch))
    captured = {}
    real = plot_features.feature_figure
    plot_features.feature_figure = lambda points, title: captured.setdefault("title", title) and real(points, title)
    try:
        assert plot_features.main(["--checkpoint", str(one_epoch), "--out", str(tmp_path / "f.png"), "--no-tensorboard"]) == 0
    finally:
        plot_features.feature_figure = real
    assert "checkpoint after 1 epoch:" in captured["title"] and "T_th = 5" in captured["title"]
    assert "at epoch 5" not in captured["title"]
