"""Where the table runner and the paired design put each run, and the files they leave in it: the
planner (tools/paper_tables.py, tools/pair_plan.py) writes there, the collector
(tools/collect_results.py, tools/pair_report.py) reads there.

    <output-root>/<config path under configs/, without .yaml>/seed<k>               a table's run
    <output-root>/subset_<name>/...                                                  a table run with --subset
    <output-root>/<config path ...>/seed<k>/{shared,without_rsg,with_rsg}            a paired design
"""

from __future__ import annotations

import os
from typing import Optional

from engine.run_folder import TEST_TABLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

TEST_CSV = "best.per_class.csv"     # what eval.py writes for best.pt --split test (its last file)
TEST_REPORT = "best.report.json"    # and its JSON report, the numbers at full precision
TEST_LOG = TEST_TABLE               # eval.py's printed table (a run file: --overwrite removes it)

SHARED_STAGE_SUFFIX = ".shared_stage"   # the name of a shared first stage (the collector skips it)
BRANCHES = ("without_rsg", "with_rsg")


def run_dir(output_root: str, config: str, seed: int) -> str:
    """<output_root>/<config path under configs/, without .yaml>/seed<seed>."""
    below = os.path.splitext(os.path.relpath(config, "configs"))[0]
    return os.path.join(output_root, below, f"seed{seed}")


def subset_root(output_root: str, subset: Optional[str]) -> str:
    """Where a table's runs go when all of them train on one subset: a folder of their own, so a
    forced subset never meets a run of the config's own subset (the collector looks there too)."""
    return output_root if subset is None else os.path.join(output_root, f"subset_{subset}")


def pair_folders(output_root: str, config: str, seed: int) -> dict:
    """The seed's three run folders, below the table runner's folder for `config` (a config outside
    configs/ by its file name)."""
    inside = not os.path.relpath(os.path.abspath(config), os.path.join(ROOT, "configs")).startswith("..")
    base = (run_dir(output_root, os.path.relpath(os.path.abspath(config), ROOT), seed) if inside else
            os.path.join(output_root, os.path.splitext(os.path.basename(config))[0], f"seed{seed}"))
    return {name: os.path.join(base, name) for name in ("shared",) + BRANCHES}
