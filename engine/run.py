"""A whole training run: build from the config, loop over epochs, log, evaluate, checkpoint, resume."""

from __future__ import annotations

import json
import logging
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.builder import build_datasets
from data.imbalance import class_counts
from data.samplers import EpochShuffleSampler
from engine.checkpoint import (CHECKPOINT_FORMAT, code_version, find_resume_checkpoint,
                               load_checkpoint, load_model_weights, save_checkpoint)
from engine.config import config_to_dict, save_config
from engine.errors import UserError
from engine.loop import NonFiniteLoss, StopRequest, predict, train_one_epoch
from engine.metrics import accuracy_report, format_group_table
from engine.schedules import class_weights, learning_rate
from losses import build_loss
from models import build_model

log = logging.getLogger("rsg")


# ---------------------------------------------------------------------------------------------
# Setup


def setup_logging(output_dir: str = "") -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler()]
    if output_dir:
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"key 'train.device' is {name!r} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw in an epoch: a pure function of (seed, epoch), so a run
    resumed at an epoch boundary draws exactly what the uninterrupted run drew."""
    return seed * 1_000_003 + epoch + 1


def set_determinism(deterministic: bool) -> None:
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def build_loaders(cfg, train_set, test_set, device):
    pin = device.type == "cuda"
    sampler = EpochShuffleSampler(len(train_set), cfg.train.seed)
    generator = torch.Generator()
    train_loader = DataLoader(train_set, cfg.data.batch_size, sampler=sampler, drop_last=True,
                              num_workers=cfg.data.num_workers, pin_memory=pin, generator=generator,
                              persistent_workers=False)
    test_loader = DataLoader(test_set, cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers, pin_memory=pin)
    return train_loader, test_loader, sampler, generator


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
        self.writer.flush()
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# The run


def evaluate(model, loader, train_counts, device) -> dict:
    predictions, targets = predict(model, loader, device)
    return accuracy_report(predictions, targets, train_counts)


def checkpoint_state(cfg, model, optimizer, counts, epoch, step, best) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,           # the epoch to run next (or to continue, with step > 0)
        "step": step,             # the step of `epoch` to continue from (0: its start)
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "config": config_to_dict(cfg),
        "class_counts": list(counts),
        "code_version": code_version(),
    }


def restore(path, cfg, model, optimizer):
    state = load_checkpoint(path)
    describe = f"backbone {cfg.model.backbone}, RSG {'on' if cfg.rsg.enabled else 'off'}"
    load_model_weights(model, state["model"], path, describe)
    optimizer.load_state_dict(state["optimizer"])
    log.info("resumed from %s: epoch %d, step %d", path, state["epoch"], state["step"])
    return state["epoch"], state["step"], {"top1": state["best_top1"], "epoch": state["best_epoch"]}


def fit(cfg, resume=None) -> dict:
    """Train as configured; returns the last evaluation report."""
    os.makedirs(cfg.output_dir, exist_ok=True)
    setup_logging(cfg.output_dir)
    save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    device = resolve_device(cfg.train.device)
    set_determinism(cfg.train.deterministic)
    seed_everything(cfg.train.seed)

    train_set, test_set = build_datasets(cfg.data)
    counts = class_counts(train_set.targets, train_set.num_classes)
    log.info("%s: %d training images in %d classes (%s), %d test images", cfg.data.name, len(train_set),
             len(counts), ", ".join(map(str, counts)) if len(counts) <= 20 else f"{counts[0]} .. {counts[-1]}",
             len(test_set))
    model = build_model(cfg, counts).to(device)
    criterion = build_loss(cfg, counts).to(device)
    optimizer = build_optimizer(cfg, model)
    train_loader, test_loader, sampler, generator = build_loaders(cfg, train_set, test_set, device)
    if len(train_loader) == 0:
        raise UserError(f"the training set has {len(train_set)} images, fewer than data.batch_size="
                        f"{cfg.data.batch_size}; lower the batch size")

    start_epoch, start_step, best = 0, 0, {"top1": -1.0, "epoch": -1}
    resume_path = find_resume_checkpoint(resume, cfg.output_dir)
    if resume_path:
        start_epoch, start_step, best = restore(resume_path, cfg, model, optimizer)
    elif resume == "auto":
        log.info("no checkpoint in %s: starting from scratch", cfg.output_dir)

    metrics_log = MetricsLog(cfg.output_dir, len(train_loader))
    log.info("training %s for epochs %d..%d in %s on %s", cfg.name, start_epoch, cfg.train.epochs - 1,
             cfg.output_dir, device)
    try:
        with StopRequest() as stop:
            report = run_epochs(cfg, model, criterion, optimizer, counts, train_loader, test_loader, sampler,
                                generator, device, metrics_log, start_epoch, start_step, best, stop)
    except NonFiniteLoss as error:
        raise UserError(f"{error}; stopped without saving. The last good checkpoint is "
                        f"{os.path.join(cfg.output_dir, 'last.pt')} (lower optim.lr, or check the data)") from None
    finally:
        metrics_log.close()
    return report


def run_epochs(cfg, model, criterion, optimizer, counts, train_loader, test_loader, sampler, generator,
               device, metrics_log, start_epoch, start_step, best, stop) -> dict:
    last_path = os.path.join(cfg.output_dir, "last.pt")
    rsg_weights = (cfg.rsg.cesc_weight, cfg.rsg.mv_weight)
    report = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        seed_everything(epoch_seed(cfg.train.seed, epoch))
        generator.manual_seed(epoch_seed(cfg.train.seed, epoch))
        sampler.set_epoch(epoch)
        sampler.set_start(start_step * cfg.data.batch_size)
        lr = learning_rate(epoch, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        weights = class_weights(epoch, counts, cfg.loss)
        weights = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
        started = time.time()
        result = train_one_epoch(model, train_loader, criterion, optimizer, epoch, device=device,
                                 class_weights=weights, rsg_weights=rsg_weights, start_step=start_step,
                                 log_step=metrics_log.step, log_every=cfg.train.log_every, stop=stop,
                                 progress=cfg.train.progress)
        if result.interrupted_at_step is not None:
            save_checkpoint(checkpoint_state(cfg, model, optimizer, counts, epoch, result.interrupted_at_step,
                                             best), last_path)
            log.info("stopped by signal %d: saved %s (epoch %d, step %d); continue with --resume auto",
                     stop.signal_number, last_path, epoch, result.interrupted_at_step)
            raise SystemExit(128 + stop.signal_number)
        start_step = 0
        record = {"epoch": epoch, "lr": lr, "train": result.metrics, "seconds": time.time() - started}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            report = evaluate(model, test_loader, counts, device)
            record["test"] = {k: report[k] for k in ("top1", "many", "medium", "few")}
            if report["top1"] > best["top1"]:
                best = {"top1": report["top1"], "epoch": epoch}
                save_checkpoint(checkpoint_state(cfg, model, optimizer, counts, epoch + 1, 0, best),
                                os.path.join(cfg.output_dir, "best.pt"))
        save_checkpoint(checkpoint_state(cfg, model, optimizer, counts, epoch + 1, 0, best), last_path)
        metrics_log.epoch(record)
        log.info(epoch_summary(record, best))
    if report:
        log.info("\n%s", format_group_table(report, f"test accuracy (%) after epoch {cfg.train.epochs - 1}, "
                                                    f"best top-1 {best['top1']:.2f} at epoch {best['epoch']}"))
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
