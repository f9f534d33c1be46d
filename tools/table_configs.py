"""The tables' configs, resolved: how a run's config differs from one, and which config is another
with RSG off (a w/o-vs-w/ RSG pair). The planner pairs configs with it (tools/paper_tables.py
--paired), the collector identifies runs and pairs cells (tools/collect_results.py)."""

from __future__ import annotations

import functools
import os
from typing import Optional

from engine.config import RUN_KEYS as config_run_keys
from engine.config import config_differences, config_to_dict, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

# Keys that say where and how fast a run ran, not what it trained (engine/branch.py's), the seed (a
# cell's runs differ in it) and a classifier stage's parent run: ignored when matching a run to its config.
RUN_KEYS = config_run_keys | {"train.seed", "stage.parent", "stage.parent_sha256", "stage.parent_epoch"}


def differing_keys(run_config: dict, reference: dict, subset: Optional[str] = None) -> list[str]:
    """Keys (beyond RUN_KEYS) where the run's config differs from the reference config; with a
    subset, the reference as the table runner trains it on that subset."""
    if subset is not None:
        reference = {**reference, "data": {**reference.get("data", {}), "subset": subset}}
    return list(config_differences(run_config, reference, RUN_KEYS))


@functools.lru_cache(maxsize=None)
def table_config(config: str) -> dict:
    """A table config, resolved, as a dict (loaded once)."""
    return config_to_dict(load_config(os.path.join(ROOT, config)))


def rsg_partner(config: str, candidates, reference) -> Optional[str]:
    """The config among `candidates` that is `config` with RSG off and nothing else changed but,
    possibly, the training subset: the paper's CIFAR pairs come from two subsets (its RSG rows from
    the first n_i, its baselines from Cao et al.'s), and a table run with --subset trains both on one."""
    mine = reference(config)
    if not mine["rsg"]["enabled"]:
        return None
    for other in candidates:
        theirs = reference(other)
        keys = [k for k in differing_keys(mine, theirs) if k != "data.subset"]
        if other != config and not theirs["rsg"]["enabled"] and keys == ["rsg.enabled"]:
            return other
    return None
