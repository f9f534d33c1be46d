"""scripts/profile_step.py on the CPU: both phases profiled through the engine's real step, and the
device-gap arithmetic it applies to GPU kernels, on made-up kernel intervals."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from conftest import tiny_config_dict, torch_globals_restored, write_config
from tools import profile_step


@pytest.mark.slow
def test_profile_summarizes_both_phases(tmp_path, capsys):
    config = write_config(tmp_path / "config.yaml", tiny_config_dict(tmp_path / "run"))   # T_th = 1
    with torch_globals_restored():
        assert profile_step.main(["--config", config, "--steps", "2", "--warmup", "1", "--rows", "5",
                                  "--trace-dir", str(tmp_path / "traces")]) == 0
    out = capsys.readouterr().out
    before = re.search(r"## before T_th \(epoch 0\): [\d.]+ ms per step, (\d+) generated", out)
    after = re.search(r"## from T_th \(epoch 1\): [\d.]+ ms per step, (\d+) generated", out)
    assert before and after and before.group(1) == "0" and int(after.group(1)) > 0
    assert out.count("aten::") >= 2 and "No device kernels (a CPU run)" in out
    assert (tmp_path / "traces" / "epoch0.json").stat().st_size > 0
    assert (tmp_path / "traces" / "epoch1.json").stat().st_size > 0


def kernel(name, start, end):
    return SimpleNamespace(name=name, device_type=DeviceType.CUDA, time_range=SimpleNamespace(start=start, end=end))


def test_device_gaps_merge_overlapping_kernels():
    host = SimpleNamespace(name="aten::add", device_type=DeviceType.CPU, time_range=SimpleNamespace(start=0, end=99))
    events = [kernel("c", 20, 30), kernel("a", 0, 10), kernel("b", 5, 12), host, kernel("d", 31, 40)]
    profiler = SimpleNamespace(events=lambda: events)
    busy, span, gaps = profile_step.device_gaps(profiler)
    assert (busy, span) == (12 + 10 + 9, 40)
    assert gaps == [(8, "b", "c"), (1, "c", "d")]
    assert profile_step.device_gaps(SimpleNamespace(events=lambda: [host])) is None
