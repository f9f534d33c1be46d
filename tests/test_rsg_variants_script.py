"""scripts/rsg_variants.py on a tiny trained run: both variants' L_MV and generated samples."""

from __future__ import annotations

import os
import re

import pytest

from conftest import run_scripts, script_command, tiny_config_dict, write_config
from tools import rsg_variants

# Its one test trains a run first.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_rsg_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("variants")
    path = write_config(tmp / "rsg.yaml", tiny_config_dict(tmp / "rsg", train={"epochs": 1}))
    result, = run_scripts([script_command("train.py", "--config", path)])
    assert result.returncode == 0, result.stderr
    return str(tmp / "rsg")


def test_both_variants_side_by_side(tiny_rsg_run, capsys, restore_torch_globals):
    assert rsg_variants.main(["--checkpoint", os.path.join(tiny_rsg_run, "last.pt")]) == 0
    out = capsys.readouterr().out
    _, channels, height, width = map(int, re.search(r"RSG input \((\d+), (\d+), (\d+), (\d+)\)", out).groups())
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.splitlines()
            if line.startswith("| paper") or line.startswith("| authors")}
    assert len(rows) == 2 + 6                           # both variants, then each departure alone
    paper, authors = rows["paper"], rows["authors"]
    # the code's direction term over x.view(-1, C) rows: between (C - 1) HW and (C + 1) HW per
    # sample; the paper's per-position one between 0 and 2 HW
    assert (channels - 1) * height * width <= float(authors[3]) <= (channels + 1) * height * width
    assert 0 <= float(paper[3]) <= 2 * height * width
    assert int(paper[1]) > 0 and int(authors[1]) > 0
    assert rows["paper + mv_rows only"][3] != paper[3]
