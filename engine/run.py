"""A whole training run (Algorithm 1's outer loop): open it (build, restore, claim the folder), then
for each epoch set its schedules, train it, save, evaluate and log; end with the run's last report.

Its rooms: building (engine/build.py), resuming with the checkpoints (engine/resume.py), the run
folder (engine/run_folder.py), the metrics log (engine/metrics_log.py), the step and the epoch
(engine/loop.py), the classifier stage (engine/stage.py) and branching (engine/branch.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Optional

import torch

from core import LOGGER_NAME
from core.errors import UserError
from core.seeds import epoch_seed
from data.datasets import log_unreadable, take_unreadable
from engine.branch import check_own_folder, prepare_branch, record_branch_source, start_branch, threshold_checkpoint_due
from engine.build import Run, build_run, rank_batch_size
from engine.checkpoint import find_resume_checkpoint, load_checkpoint
from engine.config import config_to_dict, save_config
from engine.diagnostics import test_per_class
from engine.distributed import (DistributedContext, announce_failure, announced_failure, barrier, failure_record,
                                gather_lists, init_distributed, shutdown)
from engine.evaluation import EvaluationReport, Evaluator
from engine.exits import PeerStopped, finish_ending, lost_a_peer
from engine.loop import NonFiniteLoss, StopRequest, train_one_epoch
from engine.metrics_log import MetricsLog, epoch_summary
from engine.resume import (Start, check_resumable, mid_epoch_generators, pending_on_every_rank, pending_record, restore,
                           save_run)
from engine.run_folder import THRESHOLD_CHECKPOINT, RunFolderLock, check_ownership, claim, folder_state
from engine.runtime import (log_to_file_only, resolve_device, restore_generator_states, seed_everything, set_determinism,
                            setup_logging)
from engine.schedules import class_weights, is_evaluation_epoch, learning_rate
from engine.stage import classifier_stage, load_first_stage
from rsg import generated_before, starts_generating_at

log = logging.getLogger(LOGGER_NAME)


def fit(cfg, resume=None, overwrite=False, branch_from=None) -> Optional[EvaluationReport]:
    """Train as configured, in one process or as one rank of a torchrun job; returns the last
    evaluation's report (the same on every rank), None when nothing was evaluated. `resume`: 'auto'
    or a checkpoint path; `overwrite`: replace the run already in cfg.output_dir
    (engine/run_folder.py); `branch_from`: a checkpoint of another run to continue from into this
    run's folder (engine/branch.py)."""
    ctx, device = init_distributed(cfg.train.device)
    device = device or resolve_device(cfg.train.device)
    lock = RunFolderLock(cfg.output_dir)
    try:
        setup_logging(is_main=ctx.is_main)     # the terminal; train.log once the run owns its folder
        with interrupted_before_training(cfg, lock):
            run, start = open_run(cfg, resume, overwrite, ctx, device, lock, branch_from)
        if run is None:
            return None
        with ending_reported(run), StopRequest() as stop:
            if run.stage is not None and not run.stage.trains_anything:
                return evaluate_only(run)
            return train_epochs(run, start, stop)
    finally:
        lock.release()
        shutdown()


def train_epochs(run: Run, start: Start, stop: StopRequest) -> Optional[EvaluationReport]:
    """Algorithm 1's outer loop: each epoch's schedules (lr, class weights, RSG's phase), its steps
    (train_one_epoch), then save, evaluate when due, keep threshold.pt at T_th, log."""
    best, report = start.best, None
    if start.pending:
        best = complete_pending_epoch(run, start.pending, best)
    for epoch in range(start.epoch, run.cfg.train.epochs):
        lr, weights = start_epoch_state(run, epoch, start.step)
        if start.generators is not None:     # resumed mid-epoch: the epoch's draws go on where they stopped
            restore_generator_states(start.generators, run.device)
            start.generators = None
        started = time.time()
        result = train_one_epoch(run.trainer, run.data.train_loader, epoch, weights, run.cfg.train.log_every,
                                 start.step, stop, run.metrics_log, progress=run.cfg.train.progress and run.ctx.is_main)
        if result.interrupted_at_step is not None:
            stop_now(run, stop, epoch, result.interrupted_at_step, best)
        record = epoch_record(run, epoch, lr, result, start.step, time.time() - started)
        start.step = 0
        best, evaluated = close_epoch(run, record, best, stop)
        report = evaluated if evaluated is not None else report
    return finish_training(run, best, report)


def evaluate(run: Run) -> EvaluationReport:
    """The run's model on data.eval_split, computed as eval.py computes a checkpoint's figures."""
    evaluator = Evaluator(run.cfg, run.model, run.device, run.counts, run.trainer.precision)
    return evaluator.report(run.data.test_loader, run.cfg.data.eval_split)


def open_run(cfg, resume, overwrite, ctx: DistributedContext, device: torch.device, lock: RunFolderLock,
             branch_from=None):
    """(run, start) built and restored on every rank, the folder claimed by rank 0; (None, None)
    when the run in the folder is finished already."""
    run, start = agreed_across_ranks(lambda: prepare(cfg, resume, overwrite, ctx, device, lock, branch_from))
    start.pending = pending_on_every_rank(start.pending, start.saved_record, device)
    if start.epoch >= cfg.train.epochs and not start.pending:
        log.info("the run in %s is finished: %d of %d epochs trained, nothing to do (raise train.epochs to "
                 "train it further)", cfg.output_dir, start.epoch, cfg.train.epochs)
        return None, None
    # rank 0 takes the folder once every rank has built the run
    agreed_across_ranks(lambda: claim(cfg.output_dir, lock, overwrite, lambda: write_first_files(cfg, start))
                        if ctx.is_main else None)
    if ctx.is_main:
        run.metrics_log = MetricsLog(cfg.output_dir, len(run.data.train_loader))
    if start.epoch < cfg.train.epochs and (run.stage is None or run.stage.trains_anything):
        log.info("training %s for epochs %d..%d in %s on %s%s", cfg.name, start.epoch, cfg.train.epochs - 1,
                 cfg.output_dir, device, f" x {ctx.world_size} ranks" if ctx.world_size > 1 else "")
    return run, start


@contextlib.contextmanager
def interrupted_before_training(cfg, lock: RunFolderLock):
    """A Ctrl-C before StopRequest takes over (the run being built, its folder being claimed): one
    line, in train.log too once the run has one, and exit status 130 instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        if lock.claimed:
            log.info("interrupted before training started; continue with --resume auto")
        else:
            log.info("interrupted while the run was being prepared; %s was not changed", cfg.output_dir)
        raise SystemExit(130) from None


@contextlib.contextmanager
def ending_reported(run: Run):
    """The error that ends a run, in the user's words and in train.log; a second Ctrl-C stops at
    once; the metrics log is closed whatever happens."""
    try:
        yield
    except Exception as error:
        finish_ending()
        ending = ending_error(error, run)
        if not isinstance(ending, PeerStopped):   # before this rank's exit breaks the others' collectives
            announce_failure(failure_record(ending))
        log_ending(ending, error)
        if ending is error:
            raise
        raise ending from None
    except KeyboardInterrupt:      # a second Ctrl-C: StopRequest stops at once, nothing saved
        message = f"stopped at once by a second interrupt, nothing saved; {last_checkpoint_words(run.cfg)}"
        log.info(message)
        raise SystemExit(130) from None
    finally:
        if run.metrics_log is not None:
            run.metrics_log.close()


def log_ending(ending: Exception, original: Exception) -> None:
    """The error that ends the run, into train.log: one line, with the traceback only when the
    error is not one the user can read and fix."""
    if isinstance(ending, UserError):
        log_to_file_only(f"error: {ending}")
    elif isinstance(ending, PeerStopped):
        log_to_file_only(str(ending))
    else:
        log_to_file_only(f"the run ended with {type(ending).__name__}: {ending}",
                         exc_info=(type(original), original, original.__traceback__))


def agreed_across_ranks(prepare_run):
    """Run `prepare_run` on every rank; if it fails on any rank, every rank stops: the first failing
    rank with its error, and every rank with another error with its own; the others with
    PeerStopped, silently, so that an error every rank meets is printed once. `prepare_run` must
    use no collective: a rank that failed skips it, and the ranks' collectives would pair wrongly."""
    error = None
    try:
        result = prepare_run()
    except Exception as caught:   # noqa: BLE001 - re-raised below, after the ranks agree
        error = caught
    own = failure_record(error) if error is not None else None
    failures = gather_lists([own] if own else [])      # every rank's, in rank order
    if not failures:
        return result
    finish_ending()
    first = failures[0]
    if own is not None and (own["rank"] == first["rank"] or own["message"] != first["message"]):
        raise error
    raise PeerStopped(first)


def prepare(cfg, resume, overwrite, ctx: DistributedContext, device: torch.device, lock: RunFolderLock,
            branch_from=None):
    """Check the folder, build the run and restore its checkpoint (or its source's, for a branch
    not yet started), writing nothing (rank 0 claims the folder afterwards: `claim`)."""
    if branch_from:
        check_own_folder(branch_from, cfg)
    resume_path = find_resume_checkpoint(resume, cfg.output_dir)   # a path that is no file: said first
    if ctx.is_main:
        # what the folder holds first: it needs no lock, and another train.py checking the same
        # folder holds the lock for that moment, so a lock-first check would call a finished
        # run's folder "in use" (by the finished run's PID, still in the lock file)
        check_ownership(cfg.output_dir, resume, overwrite)
        lock.check_free()
        lock.seen = folder_state(cfg.output_dir)
    set_determinism(cfg.train.deterministic)
    rank_batch_size(cfg, ctx.world_size)
    say_where_rsg_generates(cfg)
    first_stage = load_first_stage(cfg) if classifier_stage(cfg) is not None else None   # config.yaml records it
    state = load_checkpoint(resume_path) if resume_path else None
    if state is not None:
        check_resumable(resume_path, state, cfg)
    branch = prepare_branch(branch_from, cfg) if branch_from and not resume_path else None   # a resumed branch: its own last.pt
    run = build_run(cfg, ctx, device, resuming=bool(resume_path or branch), first_stage=first_stage)
    start = Start()
    if resume_path:
        start.epoch, start.step, start.best = restore(resume_path, state, run)
        start.generators = mid_epoch_generators(state, run)
        start.pending = pending_record(state, cfg.output_dir) if ctx.is_main else None
    elif branch:
        start.epoch, start.step, start.best = start_branch(run, branch)
        start.branch_source = branch
    elif resume == "auto":
        log.info("no checkpoint in %s: starting from scratch", cfg.output_dir)
    start.saved_record = state.get("record") if state is not None else None
    return run, start


def say_where_rsg_generates(cfg) -> None:
    """A run that ends at T_th (a first stage kept for branching) or before it (RSG never generates)."""
    if not cfg.rsg.enabled:
        return
    if starts_generating_at(cfg.train.epochs, cfg.rsg.threshold_epoch):     # e.g. rsg_pair's shared stage
        log.info("the run ends at rsg.threshold_epoch (%d): a first stage, RSG generates in none of its epochs; "
                 "threshold.pt keeps it for branching (train.py --branch-from)", cfg.train.epochs)
    elif not generated_before(cfg.train.epochs, cfg.rsg.threshold_epoch):
        log.warning("rsg.threshold_epoch is %d but the run has %d epochs (0..%d): RSG will never generate "
                    "in it (only its contrastive module trains); lower rsg.threshold_epoch, or set "
                    "rsg.enabled=false", cfg.rsg.threshold_epoch, cfg.train.epochs, cfg.train.epochs - 1)


def write_first_files(cfg, start: Start) -> None:
    """What rank 0 writes once it holds the folder: config.yaml, and a branch's record of its source."""
    save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    if start.branch_source is not None:
        record_branch_source(start.branch_source, cfg)


def complete_pending_epoch(run: Run, record: dict, best: dict) -> dict:
    """Evaluate (if the epoch is an evaluation epoch) and write the record last.pt carried."""
    cfg = run.cfg
    epoch = record["epoch"]
    log.info("epoch %d was trained and saved, but metrics.jsonl holds no whole record of it (the run stopped "
             "while evaluating it or writing its line): completing it", epoch)
    if is_evaluation_epoch(epoch, cfg.train):
        best = evaluate_into(run, record, best)
        record.pop("report")
    keep_threshold_checkpoint(run, epoch + 1, best)
    if run.metrics_log is not None:
        run.metrics_log.epoch(record)
    log.info(epoch_summary(record, best, cfg))
    return best


def keep_threshold_checkpoint(run: Run, next_epoch: int, best: dict) -> None:
    """threshold.pt at the boundary before T_th (the branch point, engine/branch.py), once the
    epoch's evaluation is done. An epoch completed on resume passes here too: a run stopped between
    last.pt and this file (a failed evaluation, a full disk, a kill) writes it then, from the same
    weights, instead of going on without the branch point for good."""
    if threshold_checkpoint_due(run.cfg, next_epoch):
        save_run(run, THRESHOLD_CHECKPOINT, next_epoch, 0, best)


def last_checkpoint_words(cfg) -> str:
    path = os.path.join(cfg.output_dir, "last.pt")
    if not os.path.isfile(path):
        return "no checkpoint was saved yet (the run stopped in its first epoch)"
    return f"the last good checkpoint is {path}; continue with --resume auto"


def ending_error(error: Exception, run: Run) -> Exception:
    """The error a run ends with, in the user's words: a non-finite loss or a failed write becomes
    a UserError naming what to do; a peer lost mid-collective, PeerStopped with that rank's word
    (engine/distributed.py); anything else is unchanged."""
    cfg = run.cfg
    if isinstance(error, NonFiniteLoss):
        saved = last_checkpoint_words(cfg).replace("; continue with --resume auto", "")
        ending = UserError(f"{error}; stopped without saving; {saved} (lower optim.lr, or check the data)")
        # every rank saw the same all-reduced loss and stops alike: rank 0 says so for all
        return ending if run.ctx.is_main else PeerStopped({**failure_record(ending), "rank": 0})
    if isinstance(error, OSError):
        where = error.filename or cfg.output_dir
        return UserError(f"cannot write {where}: {error.strerror or error}; {last_checkpoint_words(cfg)} "
                         f"once the disk has space (or choose another output_dir)")
    if torch.distributed.is_initialized() and lost_a_peer(error) and not isinstance(error, PeerStopped):
        return PeerStopped(announced_failure(), detail=str(error).splitlines()[0][:200])
    return error


def start_epoch_state(run: Run, epoch: int, start_step: int):
    """Seeds, sampler position, lr and class weights of `epoch`: all functions of the epoch."""
    cfg = run.cfg
    seed_everything(epoch_seed(cfg.train.seed, epoch, stream=run.ctx.rank))
    run.data.generator.manual_seed(epoch_seed(cfg.train.seed, epoch, stream=run.ctx.rank))
    run.data.sampler.set_epoch(epoch)
    run.data.sampler.set_start(start_step * cfg.data.batch_size)
    lr = learning_rate(epoch, cfg.optim, cfg.train.epochs)
    for group in run.trainer.optimizer.param_groups:
        group["lr"] = lr
    run.model.set_epoch(epoch)     # RSG's phase, before the DDP wrapper is chosen
    weights = class_weights(epoch, run.counts, cfg.loss)
    weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=run.device)
    return lr, weights


def stop_now(run: Run, stop: StopRequest, epoch: int, step: int, best: dict) -> None:
    save_run(run, "last.pt", epoch, step, best)
    where = f"epoch {epoch}, step {step}" if step else f"the end of epoch {epoch - 1}"
    log.info("stopped by signal %d: saved %s at %s; continue with --resume auto", stop.signal_number,
             os.path.join(run.cfg.output_dir, "last.pt"), where)
    raise SystemExit(128 + stop.signal_number)


def evaluate_into(run: Run, record: dict, best: dict) -> dict:
    """Evaluate, store the figures in the record under the evaluated split's name (test or val),
    save best.pt if they are the best so far; returns the best."""
    report = evaluate(run)
    record["report"] = report          # dropped before the record is written
    record[run.cfg.data.eval_split] = report.groups()
    if report.posthoc is not None:      # the tau reported, how it was chosen, and every tau
        record["posthoc"] = report.posthoc
    record[f"{run.cfg.data.eval_split}_per_class"] = test_per_class(report.per_class)   # for the per-class figure
    report_unreadable_over_ranks(run, [run.data.test_set], f"evaluation after epoch {record['epoch']}")
    if report.top1 > best["top1"]:
        best = {"top1": report.top1, "epoch": record["epoch"]}
        save_run(run, "best.pt", record["epoch"] + 1, 0, best)
    return best


def report_unreadable_over_ranks(run: Run, datasets, when: str) -> None:
    """data.skip_corrupt: the images every rank replaced, gathered, reported once by rank 0."""
    skipped = [name for dataset in datasets for name in take_unreadable(dataset)]
    skipped = gather_lists(skipped)
    if run.ctx.is_main:
        log_unreadable(skipped, when, log)


def epoch_record(run: Run, epoch: int, lr: float, result, start_step: int, seconds: float) -> dict:
    """The epoch's line of metrics.jsonl, before its evaluation."""
    record = {"epoch": epoch, "lr": lr, "train": result.metrics, "seconds": seconds, **result.sections}
    if start_step:   # resumed mid-epoch: the statistics cover the steps after the resume only
        record["partial"] = {"from_step": start_step, "steps": start_step + len(run.data.train_loader)}
    return record


def close_epoch(run: Run, record: dict, best: dict, stop: StopRequest):
    """Save, evaluate when due, keep threshold.pt, log; returns (best, the evaluation report or None)."""
    cfg, epoch, report = run.cfg, record["epoch"], None
    report_unreadable_over_ranks(run, [run.data.train_set], f"epoch {epoch}")
    # The epoch's training is saved before its evaluation: a bad evaluation image costs no training.
    save_run(run, "last.pt", epoch + 1, 0, best, record)
    if is_evaluation_epoch(epoch, cfg.train):
        best = evaluate_into(run, record, best)
        report = record.pop("report")
    keep_threshold_checkpoint(run, epoch + 1, best)
    if run.metrics_log is not None:
        run.metrics_log.epoch(record)
    log.info(epoch_summary(record, best, cfg))
    if stop.agreed(True, run.device):  # a signal during the epoch's last step: saved whole above
        stop_now(run, stop, epoch + 1, 0, best)
    return best, report


def finish_training(run: Run, best: dict, report: Optional[EvaluationReport]) -> Optional[EvaluationReport]:
    barrier()
    if report is not None and run.metrics_log is not None:
        run.metrics_log.hparams(config_to_dict(run.cfg), report)
    if report is not None:
        log.info(report.table(f"{run.cfg.data.eval_split} accuracy (%) after epoch {run.cfg.train.epochs - 1}, "
                              f"best top-1 {best['top1']:.2f} at epoch {best['epoch']}"))
    return report


def evaluate_only(run: Run) -> EvaluationReport:
    """A classifier stage that trains nothing (tau-norm): one evaluation over the tau grid, recorded as
    epoch 0 of train.epochs = 1 (so the table tools see a finished run), saved as last.pt and best.pt."""
    record = {"epoch": 0, "lr": 0.0, "train": {}, "seconds": 0.0}
    save_run(run, "last.pt", 1, 0, {"top1": -1.0, "epoch": -1}, record)
    best = evaluate_into(run, record, {"top1": -1.0, "epoch": -1})
    report = record.pop("report")
    save_run(run, "last.pt", 1, 0, best, record)
    if run.metrics_log is not None:
        run.metrics_log.epoch(record)
    log.info("\n%s", report.table(f"{run.cfg.data.eval_split} accuracy (%) of the parent {run.cfg.stage.parent}, "
                                  f"tau-normalised at tau {report.posthoc['tau']:g}"))
    return report
