"""The runner behind scripts/table{1,2,3,5,6,7,8,9}.sh: plans every run of a table and trains it.

    python scripts/paper_tables.py --table 6 --dry-run                # the commands, one per line
    python scripts/paper_tables.py --table 6 --data-root /data --gpus 4 --seeds 0,1,2 [key=value ...]
    python scripts/paper_tables.py --table 7 --cells 'configs/inat2018/*_1x_*' --data-root /data/inat
    python scripts/paper_tables.py --table 6 --data-root /data --gpus 1 --jobs-per-gpu 6   # 6 runs at once

Each table is a grid of cells (the paper's rows and columns, tools/table_spec.py); a cell names the
config that trains it, the paper's number and what is measured (top-1 error, top-1 accuracy, or a
shot group's accuracy). Every (config, seed) of a table trains once into

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
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root

from core.errors import UserError
from engine.config import load_config
from engine.continuation import finished_run_conflicts
from engine.exits import CommandLine, reports_user_errors
from engine.run_folder import last_finished_epoch, run_finished
from tools.job_pool import Task, describe_slots, run_tasks, runner_slots, summary
from tools.pair_plan import pair_commands
from tools.run_layout import TEST_CSV, TEST_LOG, pair_folders, run_dir, subset_root
from tools.run_planning import (check_overrides, gpu_count, jobs_per_device, parse_seeds, refuse_differing_runs,
                                 roots_and_overrides, train_launcher)
from tools.table_configs import rsg_partner, table_config
from tools.table_index import ALL_TABLES, get_table, table_key
from tools.table_spec import Table

# ---------------------------------------------------------------------------------------------
# Planning: what each (config, seed) still needs


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


def parse_args(argv=None):
    parser = CommandLine(__doc__)
    parser.add_argument("--table", type=table_key, required=True,
                        help=f"one of {', '.join(map(str, ALL_TABLES))}")
    parser.add_argument("--gpus", type=gpu_count, default=None,
                        help="without --jobs-per-gpu: 1 (default) python train.py, N > 1 torchrun with N processes "
                             "per run, 0 the CPU; with it: how many GPUs to use (default: every visible one), "
                             "0 the CPU")
    parser.add_argument("--jobs-per-gpu", type=jobs_per_device, default=None, metavar="N",
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
