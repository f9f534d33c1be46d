"""A whole training run: build from the config, loop over epochs, log, evaluate, checkpoint, resume."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader

from data.builder import build_datasets
from data.datasets import report_unreadable
from data.imbalance import class_counts
from data.device_loader import DeviceLoader
from data.samplers import RankSlice, ShardSampler, build_sampler
from engine.checkpoint import (CHECKPOINT_FORMAT, code_version, find_resume_checkpoint,
                               load_checkpoint, load_model_weights, save_checkpoint)
from engine.branch import prepare_branch, start_branch, threshold_checkpoint_due
from engine.config import config_to_dict, flatten, save_config
from engine.diagnostics import log_extras, test_per_class
from engine.distributed import DistributedContext, barrier, init_distributed, shutdown
from engine.errors import UserError
from engine.loop import NonFiniteLoss, StopRequest, predict, train_one_epoch
from engine.metrics import accuracy_report, format_group_table
from engine.runtime import (PhaseAwareDDP, Precision, epoch_seed, prepare_model, resolve_device,
                            seed_everything, set_determinism, setup_logging)
from engine.schedules import class_weights, learning_rate
from losses import build_loss
from models import build_model

log = logging.getLogger("rsg")


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
    of the evaluation set (ShardSampler). `data.loader: device` keeps the images on `device`.
    """
    ctx = ctx or DistributedContext()
    batch = rank_batch_size(cfg, ctx.world_size)
    sampler = build_sampler(cfg.data, train_set.targets, cfg.train.seed)   # data.sampler: shuffle or drs
    eval_sampler = None
    if ctx.world_size > 1:
        sampler = RankSlice(sampler, ctx.rank, ctx.world_size, batch)
        eval_sampler = ShardSampler(len(test_set), ctx.rank, ctx.world_size)
    generator = torch.Generator()
    if cfg.data.loader == "device":
        return build_device_loaders(cfg, train_set, test_set, device, sampler, eval_sampler, batch) + (generator,)
    pin = device.type == "cuda"
    train_loader = DataLoader(train_set, batch, sampler=sampler, drop_last=True,
                              num_workers=cfg.data.num_workers, pin_memory=pin, generator=generator,
                              persistent_workers=False)
    test_loader = DataLoader(test_set, cfg.data.eval_batch_size, sampler=eval_sampler, shuffle=False,
                             num_workers=cfg.data.num_workers, pin_memory=pin)
    return train_loader, test_loader, sampler, generator


def build_device_loaders(cfg, train_set, test_set, device, sampler, eval_sampler, batch):
    options = dict(mean=cfg.data.mean, std=cfg.data.std)
    train_loader = DeviceLoader(train_set, batch, device, train=True, sampler=sampler, crop_size=cfg.data.image_size,
                                padding=cfg.data.crop_padding, hflip=cfg.data.hflip, **options)
    test_loader = DeviceLoader(test_set, cfg.data.eval_batch_size, device, train=False, sampler=eval_sampler,
                               **options)
    return train_loader, test_loader, sampler


def build_optimizer(cfg, model):
    return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                           weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)


# ---------------------------------------------------------------------------------------------
# Logging of metrics


class MetricsLog:
    """TensorBoard scalars and a JSON-lines file of per-epoch metrics in the run directory."""

    def __init__(self, output_dir: str, steps_per_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
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
        for name, value in record.get("test", {}).items():
            if value is not None:
                self.writer.add_scalar(f"test/{name}", value, epoch)
        log_extras(self.writer, record)
        self.writer.flush()
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def hparams(self, config: dict, report: dict) -> None:
        """The run's config keys and final metrics in TensorBoard's HPARAMS tab, where runs compare
        side by side. TensorBoard takes scalars and strings only: lists go in as text. Written into
        this writer's event file (what add_hparams(run_name=".") does through a second file)."""
        from torch.utils.tensorboard.summary import hparams

        values = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                  for key, value in flatten(config).items()}
        metrics = {f"hparams/{k}": report[k] for k in ("top1", "many", "medium", "few") if report.get(k) is not None}
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


def evaluate(run: Run) -> dict:
    predictions, targets = predict(run.model, run.test_loader, run.device, precision=run.precision)
    return accuracy_report(predictions, targets, run.counts)


def checkpoint_state(run: Run, epoch: int, step: int, best: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.precision.state_dict(),
        "epoch": epoch,           # the epoch to run next (or to continue, with step > 0)
        "step": step,             # the step of `epoch` to continue from (0: its start)
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "config": config_to_dict(run.cfg),
        "class_counts": list(run.counts),
        "code_version": code_version(),
    }


def save(run: Run, name: str, epoch: int, step: int, best: dict) -> None:
    """Rank 0 alone writes checkpoints (atomically)."""
    if run.ctx.is_main:
        save_checkpoint(checkpoint_state(run, epoch, step, best), os.path.join(run.cfg.output_dir, name))


def changed_keys(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            keys += changed_keys(old, new, f"{prefix}{key}.")
        elif old != new:
            keys.append(f"{prefix}{key} ({old!r} -> {new!r})")
    return keys


def restore(path: str, run: Run):
    """Load a checkpoint into the run; every rank reads the same file."""
    cfg = run.cfg
    state = load_checkpoint(path)
    describe = f"backbone {cfg.model.backbone}, RSG {'on' if cfg.rsg.enabled else 'off'}"
    load_model_weights(run.model, state["model"], path, describe)
    run.optimizer.load_state_dict(state["optimizer"])
    run.precision.load_state_dict(state.get("scaler", {}))
    changed = changed_keys(state["config"], config_to_dict(cfg))
    if changed:  # allowed (e.g. more epochs), but never silent
        log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))
    log.info("resumed from %s: epoch %d, step %d", path, state["epoch"], state["step"])
    return state["epoch"], state["step"], {"top1": state["best_top1"], "epoch": state["best_epoch"]}


def build_run(cfg, ctx: DistributedContext, device: torch.device, resuming: bool) -> Run:
    seed_everything(cfg.train.seed)  # the same initial weights on every rank
    train_set, test_set = build_datasets(cfg.data)
    counts = class_counts(train_set.targets, train_set.num_classes)
    log.info("%s: %d training images in %d classes (%s), %d evaluation images (%s split)", cfg.data.name,
             len(train_set), len(counts),
             ", ".join(map(str, counts)) if len(counts) <= 20 else f"{counts[0]} .. {counts[-1]}",
             len(test_set), cfg.data.eval_split)
    # A resumed run takes its weights from the checkpoint: no pretrained download.
    model = build_model(cfg, counts, load_pretrained_weights=not resuming).to(device)
    model = prepare_model(model, cfg.train, ctx.world_size > 1, device)
    criterion = build_loss(cfg, counts).to(device)
    optimizer = build_optimizer(cfg, model)
    train_loader, test_loader, sampler, generator = build_loaders(cfg, train_set, test_set, device, ctx)
    if len(train_loader) == 0:
        raise UserError(f"the training set has {len(train_set)} images, fewer than data.batch_size="
                        f"{cfg.data.batch_size}; lower the batch size")
    return Run(cfg, ctx, device, model, PhaseAwareDDP(model, ctx.world_size > 1, device), criterion, optimizer,
               Precision(cfg.train.amp, device), counts, train_set, test_set, train_loader, test_loader, sampler,
               generator)


def fit(cfg, resume=None, branch_from=None) -> dict:
    """Train as configured, in one process or as one rank of a torchrun job; returns the last
    evaluation report (the same on every rank). `branch_from`: a checkpoint of another run to
    continue from into this run's folder (engine/branch.py)."""
    ctx, device = init_distributed(cfg.train.device)
    try:
        return _fit(cfg, resume, ctx, device or resolve_device(cfg.train.device), branch_from)
    finally:
        shutdown()


def _fit(cfg, resume, ctx: DistributedContext, device: torch.device, branch_from=None) -> dict:
    resuming_branch = branch_from and find_resume_checkpoint(resume, cfg.output_dir)
    parent = prepare_branch(branch_from, cfg) if branch_from and not resuming_branch else None
    if ctx.is_main:
        os.makedirs(cfg.output_dir, exist_ok=True)
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    setup_logging(cfg.output_dir, ctx.is_main)
    set_determinism(cfg.train.deterministic)
    rank_batch_size(cfg, ctx.world_size)
    resume_path = find_resume_checkpoint(resume, cfg.output_dir)
    run = build_run(cfg, ctx, device, resuming=bool(resume_path or parent))
    start_epoch, start_step, best = 0, 0, {"top1": -1.0, "epoch": -1}
    if resume_path:
        start_epoch, start_step, best = restore(resume_path, run)
    elif parent:
        start_epoch, start_step, best = start_branch(run, parent)
    elif resume == "auto":
        log.info("no checkpoint in %s: starting from scratch", cfg.output_dir)
    if ctx.is_main:
        run.metrics_log = MetricsLog(cfg.output_dir, len(run.train_loader))
    log.info("training %s for epochs %d..%d in %s on %s%s", cfg.name, start_epoch, cfg.train.epochs - 1,
             cfg.output_dir, device, f" x {ctx.world_size} ranks" if ctx.world_size > 1 else "")
    try:
        with StopRequest() as stop:
            return run_epochs(run, start_epoch, start_step, best, stop)
    except NonFiniteLoss as error:
        raise UserError(f"{error}; stopped without saving. The last good checkpoint is "
                        f"{os.path.join(cfg.output_dir, 'last.pt')} (lower optim.lr, or check the data)") from None
    finally:
        if run.metrics_log is not None:
            run.metrics_log.close()


def start_epoch_state(run: Run, epoch: int, start_step: int):
    """Seeds, sampler position, lr and class weights of `epoch`: all functions of the epoch."""
    cfg = run.cfg
    seed_everything(epoch_seed(cfg.train.seed, epoch) + run.ctx.rank)   # seed + rank
    run.generator.manual_seed(epoch_seed(cfg.train.seed, epoch) + run.ctx.rank)
    run.sampler.set_epoch(epoch)
    run.sampler.set_start(start_step * cfg.data.batch_size)
    lr = learning_rate(epoch, cfg.optim)
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


def run_epochs(run: Run, start_epoch: int, start_step: int, best: dict, stop: StopRequest) -> dict:
    cfg = run.cfg
    rsg_weights = (cfg.rsg.cesc_weight, cfg.rsg.mv_weight)
    report = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        lr, weights = start_epoch_state(run, epoch, start_step)
        started = time.time()
        result = train_one_epoch(run.ddp.for_current_phase(), run.train_loader, run.criterion, run.optimizer, epoch,
                                 device=run.device, class_weights=weights, rsg_weights=rsg_weights,
                                 start_step=start_step, log_every=cfg.train.log_every, stop=stop,
                                 log_step=run.metrics_log.step if run.metrics_log else None,
                                 progress=cfg.train.progress and run.ctx.is_main, precision=run.precision)
        if result.interrupted_at_step is not None:
            stop_now(run, stop, epoch, result.interrupted_at_step, best)
        start_step = 0
        record = {"epoch": epoch, "lr": lr, "train": result.metrics, "seconds": time.time() - started,
                  **result.sections}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            report = evaluate(run)
            record["test"] = {k: report[k] for k in ("top1", "many", "medium", "few")}
            record["test_per_class"] = test_per_class(report)
            if report["top1"] > best["top1"]:
                best = {"top1": report["top1"], "epoch": epoch}
                save(run, "best.pt", epoch + 1, 0, best)
        save(run, "last.pt", epoch + 1, 0, best)
        if threshold_checkpoint_due(cfg, epoch + 1):   # kept for branching at T_th (engine/branch.py)
            save(run, "threshold.pt", epoch + 1, 0, best)
        if run.metrics_log is not None:
            run.metrics_log.epoch(record)
        log.info(epoch_summary(record, best))
        report_unreadable([run.train_set, run.test_set], f"epoch {epoch}", log)  # data.skip_corrupt
        if stop.agreed(True, run.device):  # a signal during the epoch's last step: saved whole above
            stop_now(run, stop, epoch + 1, 0, best)
    barrier()
    if report and run.metrics_log is not None:
        run.metrics_log.hparams(config_to_dict(cfg), report)
    if report:
        log.info("\n%s", format_group_table(report, f"{cfg.data.eval_split} accuracy (%) after epoch "
                                                    f"{cfg.train.epochs - 1}, best top-1 {best['top1']:.2f} "
                                                    f"at epoch {best['epoch']}"))
    return report


def epoch_summary(record: dict, best: dict) -> str:
    train = record["train"]
    text = (f"epoch {record['epoch']:3d} lr {record['lr']:.5f} loss {train['loss_total']:.4f} "
            f"(cls {train['loss_cls']:.4f} cesc {train['loss_cesc']:.2f} mv {train['loss_mv']:.3f}) "
            f"train acc {train['accuracy']:.2f} gen/step {train['generated_per_step']:.1f} "
            f"{train['images_per_second']:.0f} img/s")
    test = record.get("test")
    if test:
        groups = " / ".join("-" if test[g] is None else f"{test[g]:.2f}" for g in ("many", "medium", "few"))
        text += f" | test top-1 {test['top1']:.2f} (many/medium/few {groups}) best {best['top1']:.2f}"
    return text
