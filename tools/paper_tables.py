"""The paper's tables as data, and the runner behind scripts/table{1,2,3,5,6,7,8,9}.sh.

    python scripts/paper_tables.py --table 6 --dry-run                # the commands, one per line
    python scripts/paper_tables.py --table 6 --data-root /data --gpus 4 --seeds 0,1,2 [key=value ...]
    python scripts/paper_tables.py --table 7 --cells 'configs/inat2018/*_1x_*' --data-root /data/inat
    python scripts/paper_tables.py --table 6 --data-root /data --gpus 1 --jobs-per-gpu 6   # 6 runs at once

Each table is a grid of cells (the paper's rows and columns); a cell names the config that trains
it, the paper's number and what is measured (top-1 error, top-1 accuracy, or a shot group's
accuracy). Every (config, seed) of a table trains once into

    <output-root>/<config path under configs/, without .yaml>/seed<k>

with `train.seed=k output_dir=<that folder>` (a config shared by several tables, e.g. LDAM-DRW-RSG at
rho = 50 in Tables 1, 3, 5 and 6, trains once). Finished runs are skipped, interrupted ones continue
(`--resume auto`). By default the runs go one after another, each on all of `--gpus`; with
`--jobs-per-gpu N` N runs go at once on each GPU (or on the CPU), each logging to `<folder>.log`
(scripts/job_pool.py). A failed run is reported and the others go on (`--fail-fast`: stop them);
Ctrl-C stops every run with its checkpoint saved. The last lines say what finished, failed and is
left; the exit status is 0 only when every run finished. The large-scale tables (7-9) select best.pt on the validation list; after
training, `eval.py --checkpoint <run>/best.pt --split test` writes the test numbers into the run
(best.per_class.csv, best.report.json, eval_test.txt), where scripts/collect_results.py reads them.

The paper's numbers below are copied from its Tables 1-3 and 5-9 (docs/REPRODUCTION.md lists them
beside the configs); the paper reports means of three runs for CIFAR.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

from core.errors import UserError
from engine.config import load_config
from engine.continuation import finished_run_conflicts
from engine.exits import reports_user_errors
from engine.run_folder import TEST_TABLE, last_finished_epoch, run_finished
from tools.job_pool import Task, describe_slots, run_tasks, runner_slots, summary

TEST_CSV = "best.per_class.csv"     # what eval.py writes for best.pt --split test (its last file)
TEST_REPORT = "best.report.json"    # and its JSON report, the numbers at full precision
TEST_LOG = TEST_TABLE               # eval.py's printed table (a run file: --overwrite removes it)


@dataclass(frozen=True)
class Cell:
    row: str                        # the paper's row label
    column: str                     # the paper's column label
    config: str                     # path from the repository root
    paper: Optional[float]          # the paper's number; None where the paper has none
    measure: str = "error"          # error (100 - top-1), top1, many, medium or few (percent)
    facets: tuple = ()              # (name, value) pairs describing the cell in the cell list
    parent: Optional[str] = None    # a classifier stage's first-stage config (trained first; its last.pt)


@dataclass(frozen=True)
class Table:
    number: object                  # the paper's table number, or a name (the "beyond" tables of issue 14)
    title: str
    unit: str                       # what the numbers are
    rows: tuple
    columns: tuple
    cells: tuple
    seeds: tuple                    # the default seeds
    evaluate_test: bool = False     # large-scale: best.pt (chosen on val) evaluated on the test list
    decimals: int = 2               # how the paper prints its numbers
    notes: str = ""
    subset: Optional[str] = None    # a table of our own comparisons: the one CIFAR subset all its runs use

    def cell(self, row: str, column: str) -> Optional[Cell]:
        return next((c for c in self.cells if c.row == row and c.column == column), None)

    def configs(self) -> list[str]:
        """The distinct configs, in cell order (Tables 8 and 9: one config gives four cells)."""
        return list(dict.fromkeys(c.config for c in self.cells))

    def parents(self) -> dict:
        """{classifier-stage config: its first-stage config}."""
        return {c.config: c.parent for c in self.cells if c.parent}

    @property
    def reference(self) -> str:
        """Whose number stands beside ours: the paper's, or (the beyond tables) a published figure."""
        return "paper" if isinstance(self.number, int) else "published"

    @property
    def script(self) -> str:
        return f"scripts/table{self.number}.sh" if isinstance(self.number, int) else f"scripts/table_{self.number}.sh"


# ---------------------------------------------------------------------------------------------
# Imbalanced CIFAR (Tables 1, 2, 3, 5, 6): ResNet-32 unless Table 2, three seeds

CIFAR_SEEDS = (0, 1, 2)
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
PROFILES = {"lt": ("long-tailed", "LT"), "step": ("step", "Step")}


def cifar_config(dataset: str, profile: str, stem: str) -> str:
    return f"configs/{dataset}_{profile}/{stem}.yaml"


# Which training subset each CIFAR number of the paper came from (data.subset, REFERENCE section 1):
# its RSG rows (and the authors' own runs without RSG, Table 2's other backbones) were trained with
# the authors' code, on the first n_i images per class; its ERM, Focal, CB Focal, CB RW, M-DRW and
# LDAM-DRW rows are Cao et al.'s published numbers (cited [4], [6], [23]; Table 1's w/o-RSG cells
# repeat Table 6's rho = 50 ones), trained on Cao et al.'s shuffled subset. Every cell's config sets it.
SUBSET_FACET = "paper's subset"


def paper_subset(rsg: bool, cao_et_al: bool = True) -> str:
    return "ldam_drw" if cao_et_al and not rsg else "first"


def cifar_facets(dataset: str, profile: str, rho: int, method: str, rsg: bool) -> tuple:
    return (("dataset", DATASETS[dataset]), ("profile", PROFILES[profile][0]), ("rho", str(rho)),
            ("method", method), ("RSG", "w/" if rsg else "w/o"), (SUBSET_FACET, paper_subset(rsg)))


def rsg_columns():
    """Tables 1 and 2: CIFAR-10 then CIFAR-100, each long-tailed then step, each w/o then w/ RSG."""
    for dataset in DATASETS:
        for profile in PROFILES:
            for rsg in (False, True):
                yield dataset, profile, rsg, f"{DATASETS[dataset]} {PROFILES[profile][1]} {'w/' if rsg else 'w/o'} RSG"


def ablation_columns():
    """Tables 3 and 5: long-tailed CIFAR-10, CIFAR-100, then step CIFAR-10, CIFAR-100."""
    for profile in PROFILES:
        for dataset in DATASETS:
            yield dataset, profile, f"{PROFILES[profile][1]} {DATASETS[dataset]}"


# Table 1: row -> (method file stem, the 8 numbers in rsg_columns() order)
TABLE1 = {
    "ERM": ("erm", (25.19, 20.25, 28.88, 26.07, 56.15, 54.44, 59.32, 56.82)),
    "Focal Loss": ("focal", (23.28, 21.58, 28.70, 26.01, 55.68, 54.85, 58.50, 55.93)),
    "M-DRW": ("m_drw", (20.44, 17.72, 21.05, 20.09, 56.06, 55.30, 56.26, 54.60)),
    "LDAM-DRW": ("ldam_drw", (18.97, 17.20, 18.67, 17.90, 53.38, 51.50, 50.97, 49.43)),
}

# Table 2: row -> (backbone, the 8 numbers in rsg_columns() order)
TABLE2 = {
    "ResNet-32": ("resnet32", (18.97, 17.20, 18.67, 17.90, 53.38, 51.50, 50.97, 49.43)),
    "ResNet-56": ("resnet56", (18.01, 16.83, 18.52, 17.20, 51.63, 50.60, 49.22, 48.53)),
    "ResNet-110": ("resnet110", (17.70, 16.61, 17.96, 16.73, 50.64, 49.83, 48.65, 47.90)),
    "DenseNet-40": ("densenet40", (17.46, 16.21, 17.40, 16.12, 49.51, 48.75, 48.30, 47.13)),
    "ResNeXt-29 8x64d": ("resnext29_8x64d", (16.10, 15.26, 16.82, 15.99, 49.62, 48.70, 50.68, 47.16)),
}

# Table 3: row -> (file stem, the 4 numbers in ablation_columns() order)
TABLE3 = {
    "MV Loss w/o 1st Term": ("ldam_drw_rsg_mv_no_term1_r50", (18.03, 52.15, 18.58, 50.34)),
    "MV Loss w/o 2nd Term": ("ldam_drw_rsg_mv_no_term2_r50", (18.07, 52.33, 18.36, 50.19)),
    "MV Loss w/o 3rd Term": ("ldam_drw_rsg_mv_no_term3_r50", (17.67, 52.12, 18.23, 49.84)),
    "Adding to Rare-class Centers": ("ldam_drw_rsg_rare_center_r50", (18.91, 52.79, 18.47, 50.67)),
    "Direct Addition": ("ldam_drw_rsg_direct_r50", (18.87, 52.48, 18.33, 49.99)),
    "Vector Transformation Module": ("ldam_drw_rsg_r50", (17.20, 51.50, 17.90, 49.43)),
}

# Table 5: row -> (file stem, the 4 numbers in ablation_columns() order)
TABLE5 = {
    "1st down-sampling": ("ldam_drw_rsg_pos_stage2_r50", (18.13, 53.22, 18.66, 50.81)),
    "2nd down-sampling": ("ldam_drw_rsg_r50", (17.20, 51.50, 17.90, 49.43)),
    "3rd down-sampling (GAP)": ("ldam_drw_rsg_pos_pool_r50", (17.68, 52.14, 18.05, 50.38)),
}

# Table 6: row -> (method stem, the 8 numbers: CIFAR-10 LT 100, 50, step 100, 50, then CIFAR-100).
# BBN and LDAM-DRW-SSP are other papers' methods: no config here.
TABLE6 = {
    "ERM": ("erm", (29.64, 25.19, 36.70, 28.88, 61.68, 56.15, 61.43, 59.32)),
    "Focal": ("focal", (29.62, 23.28, 36.09, 28.70, 61.59, 55.68, 61.65, 58.50)),
    "CB Focal": ("cb_focal", (25.43, 20.73, 39.73, 39.65, 63.98, 54.83, 80.24, 85.10)),
    "CB RW": ("cb_rw", (27.63, 21.95, 38.06, 30.38, 66.01, 57.54, 78.69, 69.63)),
    "M-DRW": ("m_drw", (24.94, 20.44, 27.67, 21.05, 59.49, 56.06, 58.91, 56.26)),
    "LDAM-DRW": ("ldam_drw", (22.97, 18.97, 23.08, 18.67, 57.96, 53.38, 54.64, 50.97)),
    "LDAM-DRW-RSG": ("ldam_drw_rsg", (20.45, 17.20, 21.65, 17.90, 55.45, 51.50, 53.00, 49.43)),
}


def table1() -> Table:
    cells = []
    for row, (method, numbers) in TABLE1.items():
        for (dataset, profile, rsg, column), paper in zip(rsg_columns(), numbers):
            config = cifar_config(dataset, profile, f"{method}{'_rsg' if rsg else ''}_r50")
            cells.append(Cell(row, column, config, paper, facets=cifar_facets(dataset, profile, 50, row, rsg)))
    return Table(1, "losses w/o and w/ RSG, ResNet-32, rho = 50", "top-1 error (%)", tuple(TABLE1),
                 tuple(c for *_, c in rsg_columns()), tuple(cells), CIFAR_SEEDS)


def table2() -> Table:
    cells = []
    for row, (backbone, numbers) in TABLE2.items():
        for (dataset, profile, rsg, column), paper in zip(rsg_columns(), numbers):
            method = f"ldam_drw{'_rsg' if rsg else ''}_r50"
            # ResNet-32 is Table 1's LDAM-DRW cell itself: the same run serves both tables.
            config = (cifar_config(dataset, profile, method) if backbone == "resnet32"
                      else f"configs/table2/{dataset}_{profile}_{backbone}_{method}.yaml")
            facets = (("dataset", DATASETS[dataset]), ("profile", PROFILES[profile][0]), ("rho", "50"),
                      ("backbone", row), ("RSG", "w/" if rsg else "w/o"),
                      (SUBSET_FACET, paper_subset(rsg, cao_et_al=backbone == "resnet32")))
            cells.append(Cell(row, column, config, paper, facets=facets))
    notes = ("Each config takes the ResNet-32 recipe and changes only `model.backbone`, as the authors' "
             "code does; RSG sits at each backbone's default position (docs/CHOICES.md, \"Backbones and "
             "RSG positions\"; for DenseNet-40 the authors' point is `rsg.position=dense3`).")
    return Table(2, "backbones, LDAM-DRW w/o and w/ RSG, rho = 50", "top-1 error (%)", tuple(TABLE2),
                 tuple(c for *_, c in rsg_columns()), tuple(cells), CIFAR_SEEDS, notes=notes)


def ablation_table(number: int, title: str, rows: dict, notes: str) -> Table:
    cells = []
    for row, (stem, numbers) in rows.items():
        for (dataset, profile, column), paper in zip(ablation_columns(), numbers):
            cells.append(Cell(row, column, cifar_config(dataset, profile, stem), paper,
                              facets=cifar_facets(dataset, profile, 50, row, True)))
    return Table(number, title, "top-1 error (%)", tuple(rows), tuple(c for *_, c in ablation_columns()),
                 tuple(cells), CIFAR_SEEDS, notes=notes)


def table3() -> Table:
    return ablation_table(3, "ablations of L_MV and the vector transformation, LDAM-DRW-RSG, rho = 50", TABLE3,
                          "`rsg.mv_terms` drops one term of Eq. 6; `rsg.generation` is `rare_center` or "
                          "`direct`; the last row is the full model.")


def table5() -> Table:
    return ablation_table(5, "RSG position in ResNet-32, LDAM-DRW-RSG, rho = 50", TABLE5,
                          "`rsg.position`: `stage2` (before the 1st down-sampling), the default `stage3` "
                          "(2nd), `pool` (the global average pooling).")


def table6() -> Table:
    columns = [(dataset, profile, rho) for dataset in DATASETS for profile in PROFILES for rho in (100, 50)]
    labels = tuple(f"{DATASETS[d]} {PROFILES[p][1]} {rho}" for d, p, rho in columns)
    cells = []
    for row, (method, numbers) in TABLE6.items():
        rsg = method.endswith("_rsg")
        for (dataset, profile, rho), label, paper in zip(columns, labels, numbers):
            cells.append(Cell(row, label, cifar_config(dataset, profile, f"{method}_r{rho}"), paper,
                              facets=cifar_facets(dataset, profile, rho, row, rsg)))
    return Table(6, "Imbalanced CIFAR, ResNet-32, rho = 100 and 50", "top-1 error (%)", tuple(TABLE6), labels,
                 tuple(cells), CIFAR_SEEDS,
                 notes="BBN and LDAM-DRW-SSP (rows of the paper's table) are other papers' methods: no config.")


# ---------------------------------------------------------------------------------------------
# Large scale (Tables 7-9): one seed by default, best.pt (chosen on val) evaluated on the test list

LARGE_SCALE_SEEDS = (0,)

# Table 7, iNaturalist 2018, ResNet-50: row -> (config stem, the paper's error; None: no cell)
TABLE7 = {
    "1x LDAM-DRW": ("resnet50_1x_ldam_drw", 34.00),       # the authors' reproduction of Cao et al.
    "1x LDAM-DRS": ("resnet50_1x_ldam_drs", 32.73),       # the same
    "1x LDAM-DRW-RSG": ("resnet50_1x_ldam_drw_rsg", 33.22),
    "1x LDAM-DRS-RSG": ("resnet50_1x_ldam_drs_rsg", 32.10),
    "2x LDAM-DRS-RSG": ("resnet50_2x_ldam_drs_rsg", 29.74),
    "2x LDAM-DRW": ("resnet50_2x_ldam_drw", None),
    "2x LDAM-DRW-RSG": ("resnet50_2x_ldam_drw_rsg", None),
    "2x LDAM-DRS": ("resnet50_2x_ldam_drs", None),
}

SHOT_COLUMNS = (("Many", "many"), ("Medium", "medium"), ("Few", "few"), ("All", "top1"))

# Tables 8 (Places-LT, ResNet-152) and 9 (ImageNet-LT, ResNeXt-50): row -> (config, Many, Medium, Few, All)
TABLE8 = {
    "LDAM-DRS": ("configs/places_lt/resnet152_ldam_drs.yaml", (43.3, 38.3, 30.7, 38.6)),
    "LDAM-DRS-RSG": ("configs/places_lt/resnet152_ldam_drs_rsg.yaml", (41.9, 41.4, 32.0, 39.3)),
}
TABLE9 = {
    "LDAM-DRS": ("configs/imagenet_lt/resnext50_ldam_drs.yaml", (63.7, 47.6, 30.0, 51.4)),
    "LDAM-DRS-RSG": ("configs/imagenet_lt/resnext50_ldam_drs_rsg.yaml", (63.2, 48.2, 32.3, 51.8)),
    # discussed in the text of section 4, no number in the table
    "LDAM-DRW": ("configs/imagenet_lt/resnext50_ldam_drw.yaml", (None,) * 4),
    "LDAM-DRW-RSG": ("configs/imagenet_lt/resnext50_ldam_drw_rsg.yaml", (None,) * 4),
}


def table7() -> Table:
    cells = []
    for row, (stem, paper) in TABLE7.items():
        schedule, method = row.split(" ", 1)
        facets = (("schedule", schedule), ("method", method.removesuffix("-RSG")),
                  ("RSG", "w/" if method.endswith("-RSG") else "w/o"))
        cells.append(Cell(row, "Error Rate", f"configs/inat2018/{stem}.yaml", paper, facets=facets))
    notes = ("1x: 90 epochs; 2x: 180 epochs. The paper's LDAM-DRW and LDAM-DRS numbers are the authors' "
             "reproductions of Cao et al.; rows without a paper number are configs with no cell in the "
             "paper. iNaturalist's test list is its validation list.")
    return Table(7, "iNaturalist 2018, ResNet-50 from scratch", "top-1 error (%), test list", tuple(TABLE7),
                 ("Error Rate",), tuple(cells), LARGE_SCALE_SEEDS, evaluate_test=True, notes=notes)


def shot_table(number: int, title: str, rows: dict, notes: str) -> Table:
    cells = []
    for row, (config, numbers) in rows.items():
        facets = (("method", row.removesuffix("-RSG")), ("RSG", "w/" if row.endswith("-RSG") else "w/o"))
        for (column, measure), paper in zip(SHOT_COLUMNS, numbers):
            cells.append(Cell(row, column, config, paper, measure, facets))
    return Table(number, title, "top-1 accuracy (%), test list", tuple(rows), tuple(c for c, _ in SHOT_COLUMNS),
                 tuple(cells), LARGE_SCALE_SEEDS, evaluate_test=True, decimals=1, notes=notes)


def table8() -> Table:
    return shot_table(8, "Places-LT, ResNet-152 pre-trained on ImageNet", TABLE8,
                      "Many > 100 training images, Medium 20-100, Few < 20; each group's number is the mean "
                      "of its classes' accuracies.")


def table9() -> Table:
    return shot_table(9, "ImageNet-LT, ResNeXt-50 32x4d from scratch", TABLE9,
                      "LDAM-DRW w/o and w/ RSG are compared in the text of section 4 only (no number).")


TABLES = {1: table1, 2: table2, 3: table3, 5: table5, 6: table6, 7: table7, 8: table8, 9: table9}


def get_table(number) -> Table:
    from tools.beyond_tables import BEYOND_TABLES  # they build on this module's helpers

    tables = {**TABLES, **BEYOND_TABLES}
    if number not in tables:
        raise UserError(f"no Table {number}; tables with configs: {', '.join(map(str, tables))}")
    return tables[number]()


def table_key(text: str):
    """--table 6 -> 6; --table beyond -> 'beyond'."""
    return int(text) if text.strip().isdigit() else text.strip()


# ---------------------------------------------------------------------------------------------
# Runs: where each (config, seed) trains, and whether it is finished


def run_dir(output_root: str, config: str, seed: int) -> str:
    """<output_root>/<config path under configs/, without .yaml>/seed<seed>."""
    below = os.path.splitext(os.path.relpath(config, "configs"))[0]
    return os.path.join(output_root, below, f"seed{seed}")


@dataclass
class Job:
    """One (config, seed) of a table: what still has to run for it."""
    config: str
    seed: int
    folder: str
    epochs: int = 0                   # the config's train.epochs: finished at its last epoch
    train: Optional[list] = None      # train.py command; None once training is finished
    evaluate: Optional[list] = None   # eval.py command (large scale); None when not needed or done
    notes: list = field(default_factory=list)
    differs: list = field(default_factory=list)   # how the finished run differs from the request

    @property
    def done(self) -> bool:
        return self.train is None and self.evaluate is None

    def shell(self) -> str:
        """One line for a shell: train, then evaluate (its table saved into the run)."""
        parts = [shlex.join(self.train)] if self.train else []
        if self.evaluate:
            parts.append(f"{shlex.join(self.evaluate)} > {shlex.quote(os.path.join(self.folder, TEST_LOG))}")
        return " && ".join(parts)

    def nothing_left(self) -> bool:
        """Whether the folder now holds the finished run (and its test evaluation, if needed)."""
        trained = run_finished(self.folder, self.epochs)
        return trained and (self.evaluate is None or os.path.isfile(os.path.join(self.folder, TEST_CSV)))

    def task(self, log: Optional[str]) -> Task:
        """The job for scripts/job_pool.py: train, then evaluate into TEST_LOG (kept only on success)."""
        steps = [(self.train, None)] if self.train else []
        if self.evaluate:
            steps.append((self.evaluate, os.path.join(self.folder, TEST_LOG)))
        return Task(self.folder, steps, log, "; ".join(self.notes), finished_anyway=self.nothing_left)


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


def plan_job(table: Table, config: str, seed: int, output_root: str, gpus: int, overrides: list[str]) -> Job:
    folder = run_dir(output_root, config, seed)
    run_overrides = [f"train.seed={seed}", f"output_dir={folder}", *overrides]
    parent = table.parents().get(config)
    if parent:          # a classifier stage starts from the same seed's finished first stage
        run_overrides.insert(2, f"stage.parent={os.path.join(run_dir(output_root, parent, seed), 'last.pt')}")
    cfg = load_config(os.path.join(ROOT, config), run_overrides)   # checks the config and the overrides now
    job = Job(config, seed, folder, cfg.train.epochs)
    if run_finished(folder, cfg.train.epochs):
        job.differs = finished_run_conflicts(folder, cfg)
    else:
        job.train = [*train_launcher(gpus), "--config", config, "--resume", "auto", *run_overrides]
        if os.path.isfile(os.path.join(folder, "last.pt")):
            job.notes.append(f"resumes after epoch {last_finished_epoch(folder)}")
    if table.evaluate_test and (job.train or not os.path.isfile(os.path.join(folder, TEST_CSV))):
        job.evaluate = [sys.executable, "eval.py", "--checkpoint", os.path.join(folder, "best.pt"), "--split", "test"]
    return job


def plan(table: Table, seeds, output_root: str = "runs", gpus: int = 1, overrides=(), cells: str = "*") -> list[Job]:
    """Every (config, seed) of `table` whose config path matches the glob `cells`."""
    check_overrides(list(overrides))
    configs = [c for c in table.configs() if fnmatch.fnmatch(c, cells)]
    if not configs:
        raise UserError(f"--cells {cells!r} matches no config of Table {table.number}")
    configs = parents_first(configs, table.parents())
    jobs = [plan_job(table, config, seed, output_root, gpus, list(overrides)) for config in configs for seed in seeds]
    refuse_differing_runs({job.folder: job.differs for job in jobs if job.differs})
    return jobs


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


def parents_first(configs: list[str], parents: dict) -> list[str]:
    """The configs with every classifier stage's first stage added (when --cells left it out) and
    placed before all the stages: a stage's job needs its parent's last.pt."""
    needed = [parents[c] for c in configs if c in parents]
    first = list(dict.fromkeys([c for c in configs if c not in parents] + needed))
    return first + [c for c in configs if c in parents]


def plan_paired(table: Table, seeds, output_root: str = "runs", gpus: int = 1, overrides=(), cells: str = "*"):
    """As `plan`, but each w/o-vs-w/ RSG pair of configs (the same config with rsg.enabled off) runs as
    one job of scripts/rsg_pair.py per seed: a shared first stage to T_th and two branches. Returns
    (jobs, epochs trained by the pairs' jobs, epochs the same runs take from scratch)."""
    from tools.collect_results import rsg_partner, table_config
    from tools.rsg_pair import pair_commands, pair_folders

    configs = [c for c in table.configs() if fnmatch.fnmatch(c, cells)]
    pairs = {with_rsg: rsg_partner(with_rsg, configs, table_config) for with_rsg in configs}
    pairs = {w: wo for w, wo in pairs.items() if wo}
    if not pairs:
        raise UserError(f"--paired: Table {table.number} has no w/o-vs-w/ RSG pair of configs among {cells!r}")
    subset_forced = any(o.split("=", 1)[0].strip() == "data.subset" for o in overrides)
    mixed = [w for w, wo in pairs.items()
             if table_config(w)["data"]["subset"] != table_config(wo)["data"]["subset"]]
    if mixed and not subset_forced:   # a shared first stage sees one set of images
        raise UserError(f"--paired: {mixed[0]} and its pair without RSG train on different subsets by default "
                        f"(the paper's numbers came from two); add --subset first or --subset ldam_drw")
    paired = set(pairs) | set(pairs.values())
    jobs = plan(table, seeds, output_root, gpus, overrides, cells) if paired != set(configs) else []
    jobs = [job for job in jobs if job.config not in paired]
    paired_epochs = scratch_epochs = 0
    for with_rsg, without in pairs.items():
        cfg = load_config(os.path.join(ROOT, with_rsg), list(overrides))
        paired_epochs += len(seeds) * (2 * cfg.train.epochs - cfg.rsg.threshold_epoch)
        scratch_epochs += len(seeds) * 2 * cfg.train.epochs
        for seed in seeds:
            job = Job(with_rsg, seed, os.path.dirname(pair_folders(output_root, with_rsg, seed)["shared"]))
            if pair_commands(with_rsg, without, seed, output_root, list(overrides), gpus):
                # --gpus 0 (the CPU, which the job's slot sets) is one process per run, rsg_pair's --gpus 1
                job.train = [sys.executable, "scripts/rsg_pair.py", "--config", with_rsg, "--without", without,
                             "--seeds", str(seed), "--output-root", output_root, "--gpus", str(max(gpus, 1)),
                             "--no-summary", *overrides]
            jobs.append(job)
    return jobs, paired_epochs, scratch_epochs


# ---------------------------------------------------------------------------------------------
# Command line (scripts/table<N>.sh)


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


def parse_seeds(text: str) -> tuple:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        seeds = ()
    if not seeds:       # "," or "": nothing would run, and the command would still end with status 0
        raise argparse.ArgumentTypeError(f"takes one or more integers separated by commas, e.g. 0,1,2; got {text!r}")
    return seeds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=table_key, required=True,
                        help=f"one of {', '.join(map(str, TABLES))}, or beyond, beyond_imagenet (issue 14)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="without --jobs-per-gpu: 1 (default) python train.py, N > 1 torchrun with N processes "
                             "per run, 0 the CPU; with it: how many GPUs to use (default: every visible one), "
                             "0 the CPU")
    parser.add_argument("--jobs-per-gpu", type=int, default=None, metavar="N",
                        help="run N runs at once on each GPU (one GPU per run), or N on the CPU with --gpus 0 or "
                             "without GPUs (each with cores / N threads); one log per run beside its folder")
    parser.add_argument("--fail-fast", action="store_true",
                        help="at the first failed run, stop the others (they save their checkpoints) and start no "
                             "more; by default the other runs go on")
    parser.add_argument("--data-root", default=None, help="data.root for every run (default: each config's)")
    parser.add_argument("--output-root", default="runs", help="run folders go under it (default: runs)")
    parser.add_argument("--seeds", type=parse_seeds, default=None,
                        help="comma-separated seeds (default: 0,1,2 for CIFAR, 0 for Tables 7-9)")
    parser.add_argument("--cells", default="*", help="run only the configs whose path matches this glob")
    parser.add_argument("--dry-run", action="store_true", help="print the commands still to run, one per line")
    parser.add_argument("--subset", choices=("first", "ldam_drw"), default=None,
                        help="CIFAR tables: train every cell on this subset (data.subset), so both sides of a "
                             "comparison see the same images; runs go under <output-root>/subset_<name>. "
                             "Default: each cell's config, the subset its paper number came from")
    parser.add_argument("--paired", action="store_true",
                        help="run each w/o-vs-w/ RSG pair (Tables 1, 2, 6) as a paired design: per seed one shared "
                             "first stage to T_th and two branches (scripts/rsg_pair.py); the same expected "
                             "difference, a smaller spread, fewer epochs")
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to every run")
    return parser.parse_intermixed_args(argv)


def subset_root(output_root: str, subset: Optional[str]) -> str:
    """Where a table's runs go when all of them train on one subset: a folder of their own, so a
    forced subset never meets a run of the config's own subset (the collector looks there too)."""
    return output_root if subset is None else os.path.join(output_root, f"subset_{subset}")


def apply_subset(table: Table, subset: Optional[str], output_root: str, overrides: list[str]):
    """(output root, overrides) that train every cell of a CIFAR table on `subset` (None: the
    table's own subset if it has one, else each config's own), each subset's runs apart."""
    for text in overrides:
        if text.split("=", 1)[0].strip() == "data.subset":
            raise UserError(f"override '{text}': use --subset, which keeps each subset's runs in their own folder")
    subset = subset or table.subset
    if subset is None:
        return output_root, overrides
    if table.evaluate_test:
        raise UserError(f"--subset is for the CIFAR tables (1, 2, 3, 5, 6, beyond); Table {table.number}'s "
                        f"datasets come long-tailed")
    return subset_root(output_root, subset), [*overrides, f"data.subset={subset}"]


def run_log(job: Job) -> str:
    """Beside the run folder, not in it: train.py owns the folder (and --overwrite may empty it)."""
    return job.folder + ".log"


@reports_user_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    output_root, overrides = roots_and_overrides(args)
    os.chdir(ROOT)   # the commands name train.py and configs/ relative to the repository root
    table = get_table(args.table)
    seeds = args.seeds or table.seeds
    output_root, overrides = apply_subset(table, args.subset, output_root, overrides)
    parallel = args.jobs_per_gpu is not None
    if parallel and not any(o.split("=", 1)[0].strip() == "train.progress" for o in overrides):
        overrides.append("train.progress=false")   # a progress bar in a log file is noise
    launcher_gpus = 1 if parallel or args.gpus is None else args.gpus
    if args.paired:
        jobs, paired_epochs, scratch_epochs = plan_paired(table, seeds, output_root, launcher_gpus, overrides,
                                                          args.cells)
        print(f"paired design: the RSG pairs train {paired_epochs} epochs instead of {scratch_epochs} from "
              f"scratch ({100 * (1 - paired_epochs / scratch_epochs):.0f}% fewer)", file=sys.stderr)
    else:
        jobs = plan(table, seeds, output_root, launcher_gpus, overrides, args.cells)
    slots = None if args.dry_run else runner_slots(args.gpus, args.jobs_per_gpu)
    pending = [job for job in jobs if not job.done]
    for job in jobs:
        if job.done:
            print(f"done: {job.folder}", file=sys.stderr)
    header = (f"Table {table.number}: {len(jobs)} runs ({len(jobs) // len(seeds)} configs x {len(seeds)} "
              f"seed{'s' if len(seeds) > 1 else ''}), {len(jobs) - len(pending)} done, {len(pending)} to run")
    if args.dry_run:
        print(header, file=sys.stderr)
        for job in pending:
            print(job.shell())
        return 0
    print(f"{header}; {describe_slots(slots)}", file=sys.stderr)
    if not pending:
        return 0
    tasks = [job.task(run_log(job) if parallel else None) for job in pending]
    outcomes, status = run_tasks(tasks, slots, args.fail_fast)
    for line in summary(outcomes, len(jobs) - len(pending)):
        print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
