"""What the table runner (tools/paper_tables.py) and the paired design (tools/pair_plan.py,
tools/rsg_pair.py) share when they plan train.py commands: the launcher, the overrides they set
themselves, the refusal of finished runs that differ from the request, and their command lines'
paths and seeds."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from core.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root


def train_launcher(gpus: int) -> list[str]:
    if gpus <= 1:
        return [sys.executable, "train.py"]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    return [torchrun, "--standalone", f"--nproc_per_node={gpus}", "train.py"]


def check_overrides(overrides: list[str]) -> None:
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key in ("train.seed", "output_dir", "stage.parent"):
            raise UserError(f"override '{text}': the table runner sets {key} per run (use --seeds and "
                            f"--output-root)")


def refuse_differing_runs(differing: dict) -> None:
    """{folder: its conflicts} of finished runs that are not the requested config's (they trained
    with other values): refused before anything runs, else the rerun would report them done."""
    if not differing:
        return
    shown = "; ".join(f"{folder}: {', '.join(conflicts)}" for folder, conflicts in list(differing.items())[:3])
    more = f"; and {len(differing) - 3} more" if len(differing) > 3 else ""
    raise UserError(f"{len(differing)} finished run(s) differ from the requested config, so their results are not "
                    f"its: {shown}{more}. Train the request under another --output-root, or remove those folders "
                    f"to train them again")


def from_caller(path: str) -> str:
    """A path given relative to the caller's folder, valid from the repository root (kept relative,
    as in the printed commands, when the caller is at the root)."""
    if os.path.isabs(path) or os.path.realpath(os.getcwd()) == os.path.realpath(ROOT):
        return path
    return os.path.abspath(path)


def roots_and_overrides(args) -> tuple[str, list]:
    """--output-root and the overrides for every run (--data-root as data.root), both valid from the
    repository root; call before changing into it."""
    output_root, data_root = from_caller(args.output_root), args.data_root and from_caller(args.data_root)
    return output_root, ([f"data.root={data_root}"] if data_root else []) + args.overrides


def gpu_count(text: str) -> int:
    """--gpus of the runners: 0 (the CPU) or a number of GPUs."""
    return whole_number(text, 0, "takes 0 (the CPU) or a number of GPUs")


def jobs_per_device(text: str) -> int:
    """--jobs-per-gpu of the runners: how many runs at once per GPU (or on the CPU)."""
    return whole_number(text, 1, "takes the number of runs at once per GPU (or on the CPU), 1 or more")


def whole_number(text: str, least: int, meaning: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = least - 1
    if number < least:
        raise argparse.ArgumentTypeError(f"{meaning}; got {text!r}")
    return number


def parse_seeds(text: str) -> tuple:
    """"0,1,2" -> (0, 1, 2). Refused: nothing (the command would run nothing and end with status 0),
    an empty or negative item, and a seed given twice (one pair counted twice in the mean and std)."""
    items = text.split(",")
    if not all(item.strip().isdigit() for item in items):
        raise argparse.ArgumentTypeError(f"takes one or more seeds (integers >= 0) separated by commas, e.g. 0,1,2; "
                                         f"got {text!r}")
    seeds = tuple(int(item) for item in items)
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"names seed {', '.join(map(str, repeated))} more than once in {text!r}: "
                                         f"each seed is one run (one pair) of the mean")
    return seeds
