"""A whole training run: build from the config, loop over epochs, log, evaluate, checkpoint, resume."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import DataLoader

from core import LOGGER_NAME
from core.errors import UserError
from core.seeds import epoch_seed
from data.builder import build_datasets
from data.datasets import check_files_exist, log_unreadable, take_unreadable
from data.device_loader import DeviceLoader
from data.imbalance import class_counts
from data.samplers import RankSlice, build_sampler
from engine.branch import check_own_folder, prepare_branch, start_branch, threshold_checkpoint_due, write_branch_record
from engine.checkpoint import (CHECKPOINT_FORMAT, code_version, find_resume_checkpoint, load_checkpoint,
                               load_model_weights, save_checkpoint, stored_config)
from engine.config import config_differences, config_to_dict, flatten, save_config
from engine.continuation import continuation_conflicts
from engine.diagnostics import log_extras, test_per_class
from engine.distributed import (DistributedContext, announce_failure, announced_failure, barrier, broadcast_flag,
                                failure_record, gather_lists, init_distributed, shutdown)
from engine.evaluation import EvaluationReport, Evaluator, build_eval_loader
from engine.exits import PeerStopped, finish_ending, lost_a_peer
from engine.loop import NonFiniteLoss, StopRequest, train_one_epoch
from engine.run_folder import (METRICS_FILE, THRESHOLD_CHECKPOINT, RunFolderLock, append_record, check_ownership,
                               check_unchanged, drop_torn_tail, folder_state, last_finished_epoch, remove_run_files)
from engine.runtime import (PhaseAwareDDP, Precision, log_to_file, log_to_file_only, prepare_model, resolve_device,
                            seed_everything, set_determinism, setup_logging)
from engine.schedules import class_weights, is_evaluation_epoch, learning_rate
from engine.stage import check_same_parent, parent_record, prepare_stage, record_parent
from losses import build_loss
from models import build_model

log = logging.getLogger(LOGGER_NAME)


# ---------------------------------------------------------------------------------------------
# Setup


def rank_batch_size(cfg, world_size: int) -> int:
    """The per-rank share of the global `data.batch_size`."""
    if cfg.data.batch_size % world_size:
        raise UserError(f"key 'data.batch_size' is {cfg.data.batch_size}, the global batch, which must divide "
                        f"evenly over the {world_size} ranks; use a multiple of {world_size}")
    return cfg.data.batch_size // world_size


def build_loaders(cfg, train_set, test_set, device, ctx=None):
    """Training and evaluation loaders, the training sampler and the workers' seed generator.

    Under torchrun each rank reads its part of every global batch (RankSlice) and its own shard
    of the evaluation set (build_eval_loader, as eval.py's). `data.loader: device` keeps the images
    on `device`.
    """
    ctx = ctx or DistributedContext()
    batch = rank_batch_size(cfg, ctx.world_size)
    sampler = build_sampler(cfg.data, train_set.targets, cfg.train.seed)   # data.sampler: shuffle or drs
    if ctx.world_size > 1:
        sampler = RankSlice(sampler, ctx.rank, ctx.world_size, batch)
    generator = torch.Generator()
    test_loader = build_eval_loader(cfg, test_set, device, ctx)
    if cfg.data.loader == "device":
        train_loader = DeviceLoader(train_set, batch, device, train=True, sampler=sampler,
                                    crop_size=cfg.data.image_size, padding=cfg.data.crop_padding,
                                    hflip=cfg.data.hflip, mean=cfg.data.mean, std=cfg.data.std)
        return train_loader, test_loader, sampler, generator
    train_loader = DataLoader(train_set, batch, sampler=sampler, drop_last=True,
                              num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                              generator=generator, persistent_workers=False)
    return train_loader, test_loader, sampler, generator


def build_optimizer(cfg, model):
    # The classifier stage's frozen parameters stay out (no weight decay on them). Not otherwise:
    # RSG switches its parameters' requires_grad by phase (RSG.set_epoch), all must be optimized.
    params = model.parameters() if cfg.stage.name == "none" else [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                           weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)


# ---------------------------------------------------------------------------------------------
# Logging of metrics


class MetricsLog:
    """TensorBoard scalars and a JSON-lines file of per-epoch metrics in the run directory."""

    def __init__(self, output_dir: str, steps_per_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        self.jsonl_path = os.path.join(output_dir, METRICS_FILE)
        self.steps_per_epoch = steps_per_epoch

    def step(self, epoch: int, step: int, values: dict) -> None:
        global_step = epoch * self.steps_per_epoch + step
        for name, value in values.items():
            self.writer.add_scalar(f"train_step/{name}", value, global_step)

    def epoch(self, record: dict) -> None:
        epoch = record["epoch"]
        for name, value in record["train"].items():
            self.writer.add_scalar(f"train/{name}", value, epoch)
        self.writer.add_scalar("train/lr", record["lr"], epoch)
        for split in ("test", "val"):   # the evaluated split's figures, under its name
            for name, value in record.get(split, {}).items():
                if value is not None:
                    self.writer.add_scalar(f"{split}/{name}", value, epoch)
        log_extras(self.writer, record)
        self.writer.flush()
        append_record(self.jsonl_path, record)

    def hparams(self, config: dict, report: EvaluationReport) -> None:
        """The run's config keys and final metrics in TensorBoard's HPARAMS tab, where runs compare
        side by side. TensorBoard takes scalars and strings only: lists go in as text. Written into
        this writer's event file (what add_hparams(run_name=".") does through a second file)."""
        from torch.utils.tensorboard.summary import hparams

        values = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for key, value in flatten(config).items()}
        metrics = {f"hparams/{k}": value for k, value in report.groups().items() if value is not None}
        for summary in hparams(values, metrics):
            self.writer.file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value)

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Run:
    """Everything a run's epochs use; built once by `build_run`."""
    cfg: object
    ctx: DistributedContext
    device: torch.device
    model: torch.nn.Module          # the model itself (checkpoints, evaluation)
    ddp: PhaseAwareDDP              # what trains: the model, or its DDP wrapper under torchrun
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    counts: list
    train_set: object
    test_set: object
    train_loader: object
    test_loader: object
    sampler: object
    generator: torch.Generator
    metrics_log: Optional[MetricsLog] = None


def evaluate(run: Run) -> EvaluationReport:
    """The run's model on data.eval_split, computed as eval.py computes a checkpoint's figures."""
    evaluator = Evaluator(run.cfg, run.model, run.device, run.counts, run.precision)
    return evaluator.report(run.test_loader, run.cfg.data.eval_split)


def checkpoint_state(run: Run, epoch: int, step: int, best: dict, record: Optional[dict] = None) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict() if run.optimizer is not None else {},
        "scaler": run.precision.state_dict(),
        "epoch": epoch,           # the epoch to run next (or to continue, with step > 0)
        "step": step,             # the step of `epoch` to continue from (0: its start)
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "config": config_to_dict(run.cfg),
        "class_counts": list(run.counts),
        "code_version": code_version(),
        "parent": parent_record(run.cfg) if run.cfg.stage.name != "none" else None,
        "record": record,         # the finished epoch's metrics line, until metrics.jsonl has it
    }


def save(run: Run, name: str, epoch: int, step: int, best: dict, record: Optional[dict] = None) -> None:
    """Rank 0 alone writes checkpoints (atomically)."""
    if run.ctx.is_main:
        save_checkpoint(checkpoint_state(run, epoch, step, best, record), os.path.join(run.cfg.output_dir, name))


def check_resumable(path: str, state: dict, cfg) -> None:
    """Before anything is built: the config may differ from the checkpoint's only where its change
    has not acted yet (engine/continuation.py), else the run would go on as another run while
    config.yaml claimed the new values for all of it. An allowed change is logged."""
    stored_config(state, path)          # a key of another code version: named with the file, here
    epochs = state["epoch"] + (1 if state["step"] else 0)     # mid-epoch: that epoch has begun
    conflicts = continuation_conflicts(state["config"], config_to_dict(cfg), epochs)
    if conflicts:
        raise UserError(f"cannot resume {path} with this config: it differs from the run's in what acted in its "
                        f"{epochs} epoch(s) so far: {'; '.join(conflicts)}. Resume with the run's own values (its "
                        f"config.yaml), or train the new config into another output_dir=<path>")
    changed = [f"{key} ({old!r} -> {new!r})" for key, (old, new) in
               config_differences(state["config"], config_to_dict(cfg)).items()]
    if changed:  # allowed (more epochs, where and how fast it runs), but never silent
        log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))


def restore(path: str, state: dict, run: Run):
    """Load the checkpoint `state` (read from `path` by every rank) into the run. Returns (epoch,
    step, best)."""
    cfg = run.cfg
    describe = f"backbone {cfg.model.backbone}, RSG {'on' if cfg.rsg.enabled else 'off'}"
    load_model_weights(run.model, state["model"], path, describe)
    check_same_parent(cfg, state, path)
    if run.optimizer is not None:
        run.optimizer.load_state_dict(state["optimizer"])
    run.precision.load_state_dict(state.get("scaler", {}))
    log.info("resumed from %s: epoch %d, step %d", path, state["epoch"], state["step"])
    return state["epoch"], state["step"], stored_best(cfg.output_dir, state)


def stored_best(output_dir: str, state: dict) -> dict:
    """The best evaluation so far: best.pt's record of itself when it exists (last.pt is written
    before its epoch's evaluation, so its own copy can be one epoch behind)."""
    best = {"top1": state["best_top1"], "epoch": state["best_epoch"]}
    path = os.path.join(output_dir, "best.pt")
    if os.path.isfile(path):
        try:
            saved = load_checkpoint(path, mmap=True)
        except UserError as error:
            raise UserError(f"{error}; it holds this run's best epoch: restore it, or move it aside to resume with "
                            f"last.pt's record of the best") from None
        if saved.get("best_top1", -1.0) > best["top1"]:
            best = {"top1": saved["best_top1"], "epoch": saved["best_epoch"]}
    return best


def build_run(cfg, ctx: DistributedContext, device: torch.device, resuming: bool, parent_state=None) -> Run:
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    train_set, test_set = build_datasets(cfg.data)
    counts = class_counts(train_set.targets, train_set.num_classes)
    log.info("%s: %d training images in %d classes (%s), %d evaluation images (%s split)", cfg.data.name,
             len(train_set), len(counts),
             ", ".join(map(str, counts)) if len(counts) <= 20 else f"{counts[0]} .. {counts[-1]}",
             len(test_set), cfg.data.eval_split)
    check_files_exist(train_set, "training", cfg.data.skip_corrupt, log)   # before any step, not after an epoch
    check_files_exist(test_set, f"{cfg.data.eval_split} (evaluation)", cfg.data.skip_corrupt, log)
    # A resumed run takes its weights from the checkpoint: no pretrained download.
    model = build_model(cfg, counts, load_pretrained_weights=not resuming and parent_state is None)
    if parent_state is not None:      # stage.name: the classifier stage starts from its parent
        prepare_stage(model, cfg, counts, parent_state)
    model = model.to(device)
    model = prepare_model(model, cfg.train, ctx.world_size > 1, device)
    criterion = build_loss(cfg, counts).to(device)
    optimizer = build_optimizer(cfg, model) if cfg.stage.name != "tau_norm" else None   # tau_norm trains nothing
    train_loader, test_loader, sampler, generator = build_loaders(cfg, train_set, test_set, device, ctx)
    if len(train_loader) == 0:
        raise UserError(f"the training set has {len(train_set)} images, fewer than data.batch_size="
                        f"{cfg.data.batch_size}; lower the batch size")
    return Run(cfg, ctx, device, model, PhaseAwareDDP(model, ctx.world_size > 1, device), criterion, optimizer,
               Precision(cfg.train.amp, device), counts, train_set, test_set, train_loader, test_loader, sampler,
               generator)


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
            if cfg.stage.name == "tau_norm":
                return evaluate_only(run)
            best, report = start.best, None
            if start.pending:
                best = complete_pending_epoch(run, start.pending, best)
            for epoch in range(start.epoch, cfg.train.epochs):
                lr, class_weights = start_epoch_state(run, epoch, start.step)
                started = time.time()
                result = train_one_epoch(run, epoch, class_weights, start.step, stop)
                if result.interrupted_at_step is not None:
                    stop_now(run, stop, epoch, result.interrupted_at_step, best)
                record = epoch_record(run, epoch, lr, result, start.step, time.time() - started)
                start.step = 0
                best, evaluated = close_epoch(run, record, best, stop)
                report = evaluated if evaluated is not None else report
            return finish_training(run, best, report)
    finally:
        lock.release()
        shutdown()


@dataclass
class Start:
    epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"top1": -1.0, "epoch": -1})
    pending: Optional[dict] = None     # the epoch record last.pt holds, when metrics.jsonl lacks it
    saved_record: Optional[dict] = None   # the epoch record of the checkpoint resumed from
    parent: Optional[object] = None    # --branch-from: the run this one branches from (engine/branch.py)


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
    agreed_across_ranks(lambda: claim(cfg, lock, resume, overwrite, start.parent) if ctx.is_main else None)
    if ctx.is_main:
        run.metrics_log = MetricsLog(cfg.output_dir, len(run.train_loader))
    if start.epoch < cfg.train.epochs and cfg.stage.name != "tau_norm":
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
    """Check the folder, build the run and restore its checkpoint (or its parent's, for a branch
    not yet started), writing nothing (rank 0 claims the folder afterwards: `claim`)."""
    if branch_from:
        check_own_folder(branch_from, cfg)
    if ctx.is_main:
        lock.check_free()
        check_ownership(cfg.output_dir, resume, overwrite)
        lock.seen = folder_state(cfg.output_dir)
    set_determinism(cfg.train.deterministic)
    rank_batch_size(cfg, ctx.world_size)
    if cfg.rsg.enabled and cfg.rsg.threshold_epoch == cfg.train.epochs:   # e.g. rsg_pair.py's shared stage
        log.info("the run ends at rsg.threshold_epoch (%d): a first stage, RSG generates in none of its epochs; "
                 "threshold.pt keeps it for branching (train.py --branch-from)", cfg.train.epochs)
    elif cfg.rsg.enabled and cfg.rsg.threshold_epoch > cfg.train.epochs:
        log.warning("rsg.threshold_epoch is %d but the run has %d epochs (0..%d): RSG will never generate "
                    "in it (only its contrastive module trains); lower rsg.threshold_epoch, or set "
                    "rsg.enabled=false", cfg.rsg.threshold_epoch, cfg.train.epochs, cfg.train.epochs - 1)
    parent_state = record_parent(cfg) if cfg.stage.name != "none" else None   # config.yaml records it
    resume_path = find_resume_checkpoint(resume, cfg.output_dir)
    state = load_checkpoint(resume_path) if resume_path else None
    if state is not None:
        check_resumable(resume_path, state, cfg)
    branch = prepare_branch(branch_from, cfg) if branch_from and not resume_path else None   # a resumed branch: its own last.pt
    run = build_run(cfg, ctx, device, resuming=bool(resume_path or branch), parent_state=parent_state)
    start = Start()
    if resume_path:
        start.epoch, start.step, start.best = restore(resume_path, state, run)
        start.pending = pending_record(state, cfg.output_dir) if ctx.is_main else None
    elif branch:
        start.epoch, start.step, start.best = start_branch(run, branch)
        start.parent = branch
    elif resume == "auto":
        log.info("no checkpoint in %s: starting from scratch", cfg.output_dir)
    start.saved_record = state.get("record") if state is not None else None
    return run, start


def claim(cfg, lock: RunFolderLock, resume, overwrite: bool, branch=None) -> None:
    """Rank 0 takes the folder: the lock, then (with --overwrite) the old run's files go, then
    train.log and config.yaml (and a branch's record of its parent). A folder that cannot be
    written to is one UserError."""
    try:
        lock.acquire()
        check_unchanged(cfg.output_dir, lock.seen)   # now that the folder is held: as it was checked
        removed = remove_run_files(cfg.output_dir) if overwrite else []
        log_to_file(cfg.output_dir)
        if removed:
            log.info("--overwrite: removed the previous run's %s from %s", ", ".join(removed), cfg.output_dir)
        if drop_torn_tail(cfg.output_dir):
            log.warning("%s ended in a line cut short by a crash: dropped, so that the next record starts a line "
                        "of its own", os.path.join(cfg.output_dir, METRICS_FILE))
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
        if branch is not None:
            write_branch_record(branch, cfg)
    except OSError as error:
        raise UserError(f"cannot write into output_dir {cfg.output_dir}: {error.strerror or error} "
                        f"({error.filename or cfg.output_dir}); fix its permissions or choose another "
                        f"output_dir=<path>") from None


def pending_record(state: dict, output_dir: str) -> Optional[dict]:
    """The record of the epoch that last.pt ends, when metrics.jsonl does not have it: that epoch
    trained and was saved, but its evaluation (or the line itself) never finished."""
    record = state.get("record")
    if record is None or state["step"] != 0:
        return None
    done = last_finished_epoch(output_dir)
    return record if done is None or done < record["epoch"] else None


def pending_on_every_rank(pending: Optional[dict], saved_record: Optional[dict], device) -> Optional[dict]:
    """Rank 0 reads metrics.jsonl; the other ranks learn from it whether to complete an epoch
    (they evaluate too) and take the record from their own copy of the checkpoint."""
    if not torch.distributed.is_initialized():
        return pending
    if broadcast_flag(pending is not None, device):
        return pending if pending is not None else saved_record
    return None


def complete_pending_epoch(run: Run, record: dict, best: dict) -> dict:
    """Evaluate (if the epoch is an evaluation epoch) and write the record last.pt carried."""
    cfg = run.cfg
    epoch = record["epoch"]
    log.info("epoch %d was trained and saved but not recorded (its evaluation did not finish): completing it",
             epoch)
    if is_evaluation_epoch(epoch, cfg.train):
        best = evaluate_into(run, record, best)
        record.pop("report")
    if run.metrics_log is not None:
        run.metrics_log.epoch(record)
    log.info(epoch_summary(record, best, cfg))
    return best


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
    run.generator.manual_seed(epoch_seed(cfg.train.seed, epoch, stream=run.ctx.rank))
    run.sampler.set_epoch(epoch)
    run.sampler.set_start(start_step * cfg.data.batch_size)
    lr = learning_rate(epoch, cfg.optim, cfg.train.epochs)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.model.set_epoch(epoch)     # RSG's phase, before the DDP wrapper is chosen
    weights = class_weights(epoch, run.counts, cfg.loss)
    weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=run.device)
    return lr, weights


def stop_now(run: Run, stop: StopRequest, epoch: int, step: int, best: dict) -> None:
    save(run, "last.pt", epoch, step, best)
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
    report_unreadable_over_ranks(run, [run.test_set], f"evaluation after epoch {record['epoch']}")
    if report.top1 > best["top1"]:
        best = {"top1": report.top1, "epoch": record["epoch"]}
        save(run, "best.pt", record["epoch"] + 1, 0, best)
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
        record["partial"] = {"from_step": start_step, "steps": start_step + len(run.train_loader)}
    return record


def close_epoch(run: Run, record: dict, best: dict, stop: StopRequest):
    """Save, evaluate when due, keep threshold.pt, log; returns (best, the evaluation report or None)."""
    cfg, epoch, report = run.cfg, record["epoch"], None
    report_unreadable_over_ranks(run, [run.train_set], f"epoch {epoch}")
    # The epoch's training is saved before its evaluation: a bad evaluation image costs no training.
    save(run, "last.pt", epoch + 1, 0, best, record)
    if is_evaluation_epoch(epoch, cfg.train):
        best = evaluate_into(run, record, best)
        report = record.pop("report")
    if threshold_checkpoint_due(cfg, epoch + 1):   # kept for branching at T_th (engine/branch.py)
        save(run, THRESHOLD_CHECKPOINT, epoch + 1, 0, best)
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
    """stage.name=tau_norm trains nothing: one evaluation over the tau grid, recorded as epoch 0 of
    train.epochs = 1 (so the table tools see a finished run), saved as last.pt and best.pt."""
    record = {"epoch": 0, "lr": 0.0, "train": {}, "seconds": 0.0}
    save(run, "last.pt", 1, 0, {"top1": -1.0, "epoch": -1}, record)
    best = evaluate_into(run, record, {"top1": -1.0, "epoch": -1})
    report = record.pop("report")
    save(run, "last.pt", 1, 0, best, record)
    if run.metrics_log is not None:
        run.metrics_log.epoch(record)
    log.info("\n%s", report.table(f"{run.cfg.data.eval_split} accuracy (%) of the parent {run.cfg.stage.parent}, "
                                  f"tau-normalised at tau {report.posthoc['tau']:g}"))
    return report


def epoch_summary(record: dict, best: dict, cfg) -> str:
    """One line per epoch. The loss is Eq. 7's weighted sum, shown as its terms so that they add
    up: loss = cls + lambda1 * cesc + lambda2 * mv (each term the epoch's mean)."""
    train = record["train"]
    partial = record.get("partial")
    text = f"epoch {record['epoch']:3d}"
    if partial:
        text += f" (steps {partial['from_step']}..{partial['steps'] - 1} only: resumed mid-epoch)"
    text += f" lr {record['lr']:.5f} loss {train['loss_total']:.4f}"
    if cfg.rsg.enabled:
        text += (f" = cls {train['loss_cls']:.4f} + {cfg.rsg.cesc_weight:g}*cesc {train['loss_cesc']:.2f}"
                 f" + {cfg.rsg.mv_weight:g}*mv {train['loss_mv']:.3f}")
    per_rank = " per rank" if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1 else ""
    text += (f" train acc {train['accuracy']:.2f} generated/step{per_rank} {train['generated_per_step']:.1f} "
             f"{train['images_per_second']:.0f} img/s")
    split = cfg.data.eval_split
    evaluated = record.get(split)
    if evaluated:
        groups = " / ".join("-" if evaluated[g] is None else f"{evaluated[g]:.2f}" for g in ("many", "medium", "few"))
        text += f" | {split} top-1 {evaluated['top1']:.2f} (many/medium/few {groups}) best {best['top1']:.2f}"
        if "posthoc" in record:   # eval.posthoc: the tau those numbers are at
            text += f" ({record['posthoc']['kind']} tau {record['posthoc']['tau']:g})"
    return text
