"""scripts/benchmark_loading.py runs on the CPU (skipping the CUDA decoder cleanly) and reports
every reader; the decoders' equivalence itself is tested in test_split_lists.py."""

from __future__ import annotations

import torch

from tools import benchmark_loading


def test_benchmark_loading_prints_every_reader(capsys):
    threads = torch.get_num_threads()
    try:
        code = benchmark_loading.main(["--count", "3", "--images", "3", "--rounds", "1", "--width", "80", "--height", "60",
                                   "--image-size", "32", "--eval-resize", "36"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for reader in ("pil", "torchvision", "torchvision+read_file", "torchvision+open", "pil->tensor", "pil+draft"):
        assert all(float(cell) > 0 for cell in rows[reader].split("|")[2:4]), rows[reader]
    if not torch.cuda.is_available():
        assert "skipped: no CUDA device" in rows["cuda"]
    assert "| decode | 0.000 | 0 |" in out
