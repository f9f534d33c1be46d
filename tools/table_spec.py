"""The tables' specification: each table of the paper as a grid of cells, with the paper's numbers.

A cell names the config that trains it, the number it is held against (the paper's; for the beyond
tables of tools/beyond_tables.py a published figure) and what is measured (top-1 error, top-1
accuracy, or a shot group's accuracy). The paper's numbers below are copied from its Tables 1-3 and
5-9 (docs/REPRODUCTION.md lists them beside the configs); the paper reports means of three runs for
CIFAR. Every table by its key: tools/table_index.py. This module imports nothing of tools/: the
planner (tools/paper_tables.py) and the collector (tools/collect_results.py) read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    number: object                  # the paper's table number, or a name (the beyond tables: tools/beyond_tables.py)
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


# Which training subset each CIFAR number of the paper came from (data.subset; docs/REPRODUCTION.md,
# "Which CIFAR training subset each number came from"):
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
