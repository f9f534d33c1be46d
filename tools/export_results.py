"""Copy the evidence of finished runs into the repository (`results/`), without their checkpoints.

    python scripts/export_results.py RUNS_ROOT results/NAME [--data-root DIR]

Every finished run folder under RUNS_ROOT (a folder with config.yaml whose metrics.jsonl holds its
last epoch) gets a folder at the same relative path under the destination, holding:
- config.yaml, metrics.jsonl, train.log and branch.json (when the run branched): the run's own files;
- last.report.json and last.per_class.csv: eval.py's evaluation of the run's last.pt on the test
  split, in float32, with the checkpoint's sha256 and the code version that trained it;
- export.json: where the run came from (folder, host, time of the export).

The layout is the run root's, so the tools read results/ as they read the runs: the collector
(`scripts/collect_results.py results/NAME --table 6`) and the paired summary (`scripts/rsg_pair.py
--output-root results/NAME ...` finds every stage finished, trains nothing, prints its table).
Unfinished runs are listed and skipped. A run already exported is left as it is when its
metrics.jsonl is the same; a different one is refused (results are never overwritten).
"""

from __future__ import annotations

import datetime
import filecmp
import json
import os
import shutil
import socket
import sys

from core.errors import UserError
from engine.evaluation import evaluate_checkpoint
from engine.exits import CommandLine, reports_user_errors
from engine.run_folder import run_finished

EVIDENCE_FILES = ("config.yaml", "metrics.jsonl", "train.log", "branch.json")   # a run's small files: no checkpoint
EVALUATED_CHECKPOINT = "last.pt"


def run_folders(root: str) -> list[str]:
    """Every folder under `root` holding a run's config.yaml (TensorBoard folders skipped), sorted."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "tensorboard")
        if "config.yaml" in files:
            found.append(folder)
    return found


def is_finished(folder: str) -> bool:
    import yaml

    with open(os.path.join(folder, "config.yaml")) as f:
        epochs = yaml.safe_load(f)["train"]["epochs"]
    return run_finished(folder, epochs)


def already_exported(source: str, destination: str) -> bool:
    """True when `destination` holds this run's export; a UserError when it holds another's."""
    exported = os.path.join(destination, "metrics.jsonl")
    if not os.path.exists(exported):
        return False
    if filecmp.cmp(os.path.join(source, "metrics.jsonl"), exported, shallow=False):
        return True
    raise UserError(f"{destination} already holds an exported run whose metrics.jsonl differs from {source}'s; "
                    "export into another folder (results are never overwritten)")


def export_run(source: str, destination: str, overrides: list) -> None:
    """The run's files, the float32 evaluation of its last.pt, and export.json, into `destination`."""
    checkpoint = os.path.join(source, EVALUATED_CHECKPOINT)
    if not os.path.isfile(checkpoint):
        raise UserError(f"{source} is finished but has no {EVALUATED_CHECKPOINT} to evaluate; was it moved?")
    os.makedirs(destination, exist_ok=True)
    evaluate_checkpoint(checkpoint, overrides, os.path.join(destination, "last.per_class.csv"))
    for name in EVIDENCE_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(destination, name))
    record = {"source": os.path.abspath(source), "host": socket.gethostname(),
              "exported": datetime.datetime.now().isoformat(timespec="seconds"), "evaluated": EVALUATED_CHECKPOINT}
    with open(os.path.join(destination, "export.json"), "w") as f:
        json.dump(record, f, indent=1)


def export(root: str, destination_root: str, overrides: list) -> tuple[list, list, list]:
    """(exported, already there, unfinished) run folders of `root`."""
    if not os.path.isdir(root):
        raise UserError(f"runs root not found: {root}")
    if os.path.exists(destination_root) and not os.path.isdir(destination_root):
        raise UserError(f"the destination {destination_root} is a file; give a folder (e.g. results/<name>), "
                        f"where each run's evidence gets a folder of its own")
    exported, kept, unfinished = [], [], []
    for folder in run_folders(root):
        destination = os.path.join(destination_root, os.path.relpath(folder, root))
        if not is_finished(folder):
            unfinished.append(folder)
        elif already_exported(folder, destination):
            kept.append(folder)
        else:
            export_run(folder, destination, overrides)
            exported.append(folder)
    return exported, kept, unfinished


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("runs_root", help="the folder the runs were trained under (e.g. rsg_pair.py's --output-root)")
    parser.add_argument("destination", help="where their evidence goes, e.g. results/cpu_paper")
    parser.add_argument("--data-root", default=None, help="data.root for the evaluation (default: the run's own)")
    args = parser.parse_args(argv)
    overrides = [f"data.root={args.data_root}"] if args.data_root else []
    exported, kept, unfinished = export(args.runs_root, args.destination, overrides)
    for folder in unfinished:
        print(f"not finished, skipped: {folder}")
    print(f"exported {len(exported)} run(s) into {args.destination}; {len(kept)} already there; "
          f"{len(unfinished)} unfinished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
