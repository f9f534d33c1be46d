"""The "beyond" tables: today's simple long-tail baselines, each without and with RSG (docs/CHOICES.md,
"Today's baselines and the decoupled classifier stage").

    bash scripts/table_beyond.sh            CIFAR-10-LT and CIFAR-100-LT, rho 100 and 50, ResNet-32
    bash scripts/table_beyond_imagenet.sh   ImageNet-LT, ResNeXt-50: Kang et al.'s cRT, LWS, tau-norm

Rows: ERM (the first stage), the logit-adjusted loss (Menon et al. 2021), balanced softmax (Ren et
al. 2020), and the decoupled classifier stage (Kang et al. 2020) on ERM; columns pair each setting
w/o and w/ RSG, and the collector prints RSG's delta (w/ minus w/o) under each w/ cell. For the
classifier stage "w/ RSG" means the first stage was ERM-RSG (RSG is off in the stage itself): does
RSG's feature learning help a re-balanced classifier? Second-stage cells name their first stage
(`Cell.parent`); the runner trains the parent first and passes `stage.parent=<its run>/last.pt`.

Published numbers: figures published for this very setting (ResNet-32, 200 epochs, CIFAR-LT), each
with its source in the table's notes; cells without one stay empty.
"""

from __future__ import annotations

from tools.table_spec import DATASETS, Cell, Table, cifar_config, cifar_facets

BEYOND_SEEDS = (0, 1, 2)
BEYOND_COLUMNS = tuple((dataset, rho, rsg) for dataset in DATASETS for rho in (100, 50) for rsg in (False, True))

# row -> (config stem without "_r<rho>", the first stage's stem or None, published numbers
# {(dataset, rho, rsg): top-1 error}), each row's source in BEYOND_NOTES. ERM w/ RSG: the RSG paper's Table 1.
BAGOFTRICKS = "Zhang et al., Bag of Tricks for Long-Tailed Visual Recognition (AAAI 2021), its trick gallery"
BEYOND_ROWS = {
    "ERM": ("erm", None, {("cifar10", 100, False): 29.64, ("cifar10", 50, False): 25.19,
                          ("cifar100", 100, False): 61.68, ("cifar100", 50, False): 56.15,
                          ("cifar10", 50, True): 20.25, ("cifar100", 50, True): 54.44}),
    "Logit-adjusted loss": ("la", None, {("cifar10", 100, False): 22.11, ("cifar100", 100, False): 55.94}),
    "Balanced softmax": ("bsm", None, {("cifar10", 100, False): 22.46, ("cifar10", 50, False): 18.89,
                                       ("cifar100", 100, False): 57.01, ("cifar100", 50, False): 53.45}),
    "cRT": ("erm_crt", "erm", {("cifar10", 100, False): 25.01, ("cifar10", 50, False): 19.83,
                               ("cifar100", 100, False): 59.74, ("cifar100", 50, False): 54.64}),
    "tau-norm": ("erm_tau_norm", "erm", {("cifar10", 100, False): 27.30, ("cifar10", 50, False): 20.22,
                                         ("cifar100", 100, False): 59.04, ("cifar100", 50, False): 54.31}),
}
BEYOND_NOTES = (
    "Published (top-1 error, ResNet-32, 200 epochs; w/o RSG unless said): ERM from Cao et al. (NeurIPS 2019, the "
    "LDAM-DRW paper), the same figures as the RSG paper's Table 6, and ERM w/ RSG at rho = 50 from the RSG "
    "paper's Table 1. Logit-adjusted loss: Menon et al.'s official code, its README's example test accuracies "
    "77.89 (CIFAR-10-LT) and 44.06 (CIFAR-100-LT), rho = 100 only, one run each on their own CIFAR-LT files (the "
    "same exponential profile, not necessarily the same images). Balanced softmax (the loss from the start, no "
    f"meta sampler), cRT and tau-norm (first stage cross-entropy): {BAGOFTRICKS}, on Cao et al.'s subset "
    "(its configs/cao_cifar). The same sources give LDAM-DRW 22.27 / 18.40 / 57.53 / 52.71 (a re-run; Table 6 "
    "has the paper's), balanced softmax with DRW 22.83 / 19.16 / 58.18 / 53.51, LWS 27.37 / 21.34 / 59.84 / "
    "54.79 and post-hoc logit adjustment 22.68 / - / 55.93 / - (C10 100 / C10 50 / C100 100 / C100 50), rows "
    "this table does not train. Every published figure comes from another training subset than ours (below), "
    "so compare RSG's deltas, not the absolute errors. cRT and tau-norm: the first stage is the ERM (or "
    "ERM-RSG) cell of the same seed; tau-norm is reported at tau = 1 (CIFAR has no validation split; every tau "
    "of the grid is in the run's metrics.jsonl). Every run of this table, the ERM first stages included, trains "
    "on the first n_i images per class (data.subset=first, runs under <output-root>/subset_first), so both sides "
    "of each RSG delta see the same images.")


def beyond_stem(stem: str, rsg: bool, rho: int) -> str:
    """erm + RSG -> erm_rsg_r50; erm_crt + RSG -> erm_rsg_crt_r50 (RSG belongs to the first stage)."""
    head, _, stage = stem.partition("_") if stem.startswith("erm_") else (stem, "", "")
    return f"{head}{'_rsg' if rsg else ''}{'_' + stage if stage else ''}_r{rho}"


def beyond_config(dataset: str, stem: str, rsg: bool, rho: int) -> str:
    name = beyond_stem(stem, rsg, rho)
    if stem == "erm":            # the first stage is the paper's own ERM cell (the same runs as Tables 1, 6)
        return cifar_config(dataset, "lt", name)
    return f"configs/beyond/{dataset}_lt/{name}.yaml"


def column_label(dataset: str, rho: int, rsg: bool) -> str:
    return f"{DATASETS[dataset]} LT {rho} {'w/' if rsg else 'w/o'} RSG"


# Our own comparisons: both sides of every RSG delta, and each classifier stage with its first stage,
# train on one subset. The first n_i images per class are the RSG paper's (its authors' code); the
# ERM first stages are Table 6's configs (Cao et al.'s subset there), run here on this one instead.
BEYOND_SUBSET = "first"


def table_beyond() -> Table:
    cells = []
    for row, (stem, parent, published) in BEYOND_ROWS.items():
        for dataset, rho, rsg in BEYOND_COLUMNS:
            parent_config = beyond_config(dataset, parent, rsg, rho) if parent else None
            cells.append(Cell(row, column_label(dataset, rho, rsg), beyond_config(dataset, stem, rsg, rho),
                              published.get((dataset, rho, rsg)), facets=cifar_facets(dataset, "lt", rho, row, rsg),
                              parent=parent_config))
    return Table("beyond", "today's baselines w/o and w/ RSG, ResNet-32, long-tailed CIFAR",
                 "top-1 error (%)", tuple(BEYOND_ROWS), tuple(column_label(*c) for c in BEYOND_COLUMNS),
                 tuple(cells), BEYOND_SEEDS, notes=BEYOND_NOTES, subset=BEYOND_SUBSET)


# ImageNet-LT, ResNeXt-50: row -> (config stem, parent stem or None, Kang et al.'s Many, Medium, Few, All)
KANG_RESNEXT50 = {          # Kang et al. ICLR 2020 (ResNeXt-50 on ImageNet-LT), as cited in the RSG paper's Table 9
    "Joint (ERM)": (65.9, 37.5, 7.7, 44.4),
    "cRT": (61.8, 46.2, 27.4, 49.6),
    "LWS": (60.2, 47.2, 30.3, 49.9),
    "tau-norm": (59.1, 46.9, 30.7, 49.4),
}
IMAGENET_ROWS = {"Joint (ERM)": "", "cRT": "_crt", "LWS": "_lws", "tau-norm": "_tau_norm"}
SHOTS = (("Many", "many"), ("Medium", "medium"), ("Few", "few"), ("All", "top1"))


def table_beyond_imagenet() -> Table:
    cells, rows = [], []
    for method, suffix in IMAGENET_ROWS.items():
        for rsg in (False, True):
            row = f"{method}{' on ERM-RSG' if rsg and suffix else ' w/ RSG' if rsg else ''}"
            rows.append(row)
            first = f"resnext50_erm{'_rsg' if rsg else ''}"
            config = f"configs/beyond/imagenet_lt/{first}{suffix}.yaml"
            parent = f"configs/beyond/imagenet_lt/{first}.yaml" if suffix else None
            published = KANG_RESNEXT50[method] if not rsg else (None,) * 4
            facets = (("method", method), ("RSG", "w/" if rsg else "w/o"))
            for (column, measure), number in zip(SHOTS, published):
                cells.append(Cell(row, column, config, number, measure, facets, parent=parent))
    notes = ("Published: Kang et al. (ICLR 2020), ResNeXt-50, as cited in the RSG paper's Table 9 (their first "
             "stage: 90 epochs, cosine; ours: the Table 9 recipe, 100 epochs, steps at 60, 80, 95). \"on ERM-RSG\": "
             "the classifier stage on the first stage trained with RSG. tau of tau-norm is chosen on the "
             "validation list; every number is best.pt (chosen on val) evaluated on the test list.")
    return Table("beyond_imagenet", "Kang et al.'s classifier stage w/o and w/ RSG, ImageNet-LT, ResNeXt-50",
                 "top-1 accuracy (%), test list", tuple(rows), tuple(c for c, _ in SHOTS), tuple(cells), (0,),
                 evaluate_test=True, decimals=1, notes=notes)


BEYOND_TABLES = {"beyond": table_beyond, "beyond_imagenet": table_beyond_imagenet}
