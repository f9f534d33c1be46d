"""What the JPEG copy costs, from the runs of configs/jpeg_cost/ on the lossless part of CIFAR-10
(docs/REPRODUCTION.md, "Where the six points go").

    python scripts/jpeg_cost.py OUT --png-root P --jpeg-root J --seeds 0,1,2 [--evaluate]

OUT holds, per kind of training images (png, jpeg: the originals and their JPEG copies, of the
same names), `<kind>/balanced/seed<k>` (lossless_part_ldam_drw_balanced.yaml) and the rho = 10
pairs that scripts/rsg_pair.py trains under `<kind>` (lossless_part_ldam_drw_rsg_r10.yaml with
its partner without RSG). Each run was evaluated in training on its own kind of test images;
`--evaluate` first evaluates each finished run's last.pt on the other kind (eval.py's files
`cross.per_class.csv` and `cross.report.json` in the run folder; a finished evaluation is kept).

Then, per setting and seed, the top-1 error E[trained on][tested on] and its paired differences,
each as mean ± std over seeds and the 95% t-interval of the mean:
- the test images: E[k][jpeg] - E[k][png], one model on both test sets (its weights fixed);
- the training images: E[jpeg][png] - E[png][png], a seed's two runs tested on the originals;
- both: E[jpeg][jpeg] - E[png][png], what a study on the JPEG copy carries of it.
And RSG's effect (w/ minus w/o RSG) on each kind, trained and tested alike.
"""

from __future__ import annotations

import json
import os
import sys

from core.errors import UserError
from engine.exits import CommandLine, reports_user_errors
from tools.collect_results import mean_std, read_run, run_report
from tools.pair_report import mean_interval_95
from tools.run_layout import pair_folders
from tools.run_planning import parse_seeds

KINDS = ("png", "jpeg")
RSG_CONFIG = "configs/jpeg_cost/lossless_part_ldam_drw_rsg_r10.yaml"
SETTINGS = ("balanced", "rho 10, w/o RSG", "rho 10, w/ RSG")
CROSS_CSV = "cross.per_class.csv"
CROSS_REPORT = "cross.report.json"


def run_folder(output_root: str, kind: str, setting: str, seed: int) -> str:
    if setting == "balanced":
        return os.path.join(output_root, kind, "balanced", f"seed{seed}")
    branch = "with_rsg" if setting.endswith("w/ RSG") else "without_rsg"
    return pair_folders(os.path.join(output_root, kind), RSG_CONFIG, seed)[branch]


def own_error(folder: str):
    """The final epoch's test error on the run's own kind of test images, or None while unfinished."""
    if not os.path.isfile(os.path.join(folder, "config.yaml")):
        return None
    run = read_run(folder)
    report = run_report(run) if run.finished else None
    return None if report is None else 100.0 - report["top1"]


def cross_error(folder: str):
    path = os.path.join(folder, CROSS_REPORT)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return 100.0 - json.load(f)["top1"]


def evaluate_crosswise(output_root: str, roots: dict, seeds) -> list[str]:
    """eval.py's evaluation of each finished run's last.pt on the other kind's test images; the
    folders evaluated now."""
    from engine.evaluation import evaluate_checkpoint

    evaluated = []
    for kind, other in (("png", "jpeg"), ("jpeg", "png")):
        for setting in SETTINGS:
            for seed in seeds:
                folder = run_folder(output_root, kind, setting, seed)
                if own_error(folder) is None or cross_error(folder) is not None:
                    continue
                evaluate_checkpoint(os.path.join(folder, "last.pt"), [f"data.root={roots[other]}"],
                                    os.path.join(folder, CROSS_CSV))
                evaluated.append(folder)
    return evaluated


def error_matrix(output_root: str, setting: str, seed: int):
    """{(trained on, tested on): error} of one setting and seed, or None while a number is missing."""
    matrix = {}
    for kind, other in (("png", "jpeg"), ("jpeg", "png")):
        folder = run_folder(output_root, kind, setting, seed)
        matrix[(kind, kind)], matrix[(kind, other)] = own_error(folder), cross_error(folder)
    return None if None in matrix.values() else matrix


DIFFERENCES = (
    ("test images, model trained on PNG", lambda e: e[("png", "jpeg")] - e[("png", "png")]),
    ("test images, model trained on JPEG", lambda e: e[("jpeg", "jpeg")] - e[("jpeg", "png")]),
    ("training images, tested on PNG", lambda e: e[("jpeg", "png")] - e[("png", "png")]),
    ("both (JPEG/JPEG minus PNG/PNG)", lambda e: e[("jpeg", "jpeg")] - e[("png", "png")]),
)


def interval_text(values: list) -> str:
    interval = mean_interval_95(values)
    return "" if interval is None else f", 95% t-interval {interval[0]:+.2f} to {interval[1]:+.2f}"


def setting_report(output_root: str, setting: str, seeds) -> list[str]:
    matrices = {seed: error_matrix(output_root, setting, seed) for seed in seeds}
    done = {seed: m for seed, m in matrices.items() if m is not None}
    lines = [f"{setting}: top-1 error (%) trained on / tested on, per seed"]
    for seed, matrix in done.items():
        lines.append(f"  seed {seed}: " + ", ".join(f"{train}/{test} {matrix[(train, test)]:.2f}"
                                                    for train in KINDS for test in KINDS))
    missing = [seed for seed in seeds if seed not in done]
    if missing:
        lines.append(f"  not finished or not cross-evaluated: seed(s) {', '.join(map(str, missing))}")
    for label, difference in DIFFERENCES:
        values = [difference(matrix) for matrix in done.values()]
        if values:
            lines.append(f"  {label}: {mean_std(values)}{interval_text(values)} ({len(values)} seeds)")
    return lines


def rsg_effect(output_root: str, seeds) -> list[str]:
    lines = ["RSG's effect, w/ minus w/o RSG at rho 10, trained and tested on the same kind"]
    for kind in KINDS:
        values = []
        for seed in seeds:
            errors = [own_error(run_folder(output_root, kind, setting, seed)) for setting in SETTINGS[1:]]
            if None not in errors:
                values.append(errors[1] - errors[0])
        if values:
            lines.append(f"  {kind}: {mean_std(values)}{interval_text(values)} ({len(values)} seeds)")
    return lines


def report(output_root: str, seeds) -> str:
    lines = []
    for setting in SETTINGS:
        lines += setting_report(output_root, setting, seeds)
    return "\n".join(lines + rsg_effect(output_root, seeds))


@reports_user_errors
def main(argv=None) -> int:
    parser = CommandLine(__doc__)
    parser.add_argument("output_root", help="the folder holding png/ and jpeg/ (see above)")
    parser.add_argument("--png-root", help="the image folder of the originals (for --evaluate)")
    parser.add_argument("--jpeg-root", help="the image folder of their JPEG copies (for --evaluate)")
    parser.add_argument("--seeds", type=parse_seeds, default=(0, 1, 2))
    parser.add_argument("--evaluate", action="store_true", help="evaluate each finished run on the other test images first")
    args = parser.parse_args(argv)
    if not all(os.path.isdir(os.path.join(args.output_root, kind)) for kind in KINDS):
        raise UserError(f"{args.output_root} must hold png/ and jpeg/, the runs on each kind of training images")
    if args.evaluate:
        if not (args.png_root and args.jpeg_root):
            raise UserError("--evaluate needs --png-root and --jpeg-root, the two image folders")
        for folder in evaluate_crosswise(args.output_root, {"png": args.png_root, "jpeg": args.jpeg_root}, args.seeds):
            print(f"evaluated {folder} on the other test images")
    print(report(args.output_root, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
