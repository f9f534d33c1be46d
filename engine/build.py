"""Building a run from its config: the data and its loaders, the model (from a classifier stage's
first stage where there is one), the loss, the optimizer, and the `Run` that holds them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import DataLoader

from core import LOGGER_NAME
from core.errors import UserError
from data.builder import build_datasets
from data.datasets import check_files_exist
from data.device_loader import DeviceLoader
from data.imbalance import class_counts
from data.samplers import RankSlice, build_sampler
from engine.distributed import DistributedContext
from engine.evaluation import build_eval_loader
from engine.loop import Trainer, loss_weights
from engine.metrics_log import MetricsLog
from engine.runtime import PhaseAwareDDP, Precision, prepare_model, seed_everything
from engine.stage import ClassifierStage, classifier_stage, prepare_stage
from losses import build_loss
from models import build_model

log = logging.getLogger(LOGGER_NAME)


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


def build_optimizer(cfg, model) -> Optional[torch.optim.Optimizer]:
    """SGD over what trains: every parameter of a first stage (RSG's too, whatever its phase:
    RSG.set_epoch only switches which of them get a gradient), what a classifier stage says it
    trains; None for a stage that trains nothing (tau-norm)."""
    stage = classifier_stage(cfg)
    if stage is not None and not stage.trains_anything:
        return None
    params = model.parameters() if stage is None else stage.trained_parameters(model)
    return torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                           weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)


@dataclass
class TrainingData:
    """The run's data: both sets, their loaders, the training sampler and the loader workers' seeds."""
    train_set: object
    test_set: object
    train_loader: object
    test_loader: object
    sampler: object
    generator: torch.Generator


@dataclass
class Run:
    """Everything a run's epochs use; built once by `build_run`."""
    cfg: object
    ctx: DistributedContext
    model: torch.nn.Module          # the model itself (checkpoints, evaluation); trainer.network trains it
    trainer: Trainer
    data: TrainingData
    counts: list                    # training images per class
    stage: Optional[ClassifierStage] = None     # None: a first stage
    metrics_log: Optional[MetricsLog] = None    # rank 0, once the run owns its folder

    @property
    def device(self) -> torch.device:
        return self.trainer.device


def load_datasets(cfg) -> tuple:
    """(training set, evaluation set, training images per class), their files checked before any
    step rather than after an epoch."""
    train_set, test_set = build_datasets(cfg.data)
    counts = class_counts(train_set.targets, train_set.num_classes)
    log.info("%s: %d training images in %d classes (%s), %d evaluation images (%s split)", cfg.data.name,
             len(train_set), len(counts),
             ", ".join(map(str, counts)) if len(counts) <= 20 else f"{counts[0]} .. {counts[-1]}",
             len(test_set), cfg.data.eval_split)
    check_files_exist(train_set, "training", cfg.data.skip_corrupt, log)
    check_files_exist(test_set, f"{cfg.data.eval_split} (evaluation)", cfg.data.skip_corrupt, log)
    return train_set, test_set, counts


def build_run(cfg, ctx: DistributedContext, device: torch.device, resuming: bool, first_stage=None) -> Run:
    """The run, its weights initialised from the seed (the same on every rank), or from
    `first_stage` (a checkpoint's state) for a classifier stage; a resumed run loads its own later.
    The order of the draws from the seeded generators is the one of every earlier version."""
    seed_everything(cfg.train.seed)
    train_set, test_set, counts = load_datasets(cfg)
    # A resumed run takes its weights from the checkpoint: no pretrained download.
    model = build_model(cfg, counts, load_pretrained_weights=not resuming and first_stage is None)
    stage = classifier_stage(cfg)
    if stage is not None:
        prepare_stage(model, cfg, counts, first_stage)
    model = prepare_model(model.to(device), cfg.train, ctx.world_size > 1, device)
    criterion = build_loss(cfg, counts).to(device)
    trainer = Trainer(PhaseAwareDDP(model, ctx.world_size > 1, device), criterion, build_optimizer(cfg, model),
                      Precision(cfg.train.amp, device), device, loss_weights(cfg))
    data = TrainingData(train_set, test_set, *build_loaders(cfg, train_set, test_set, device, ctx))
    if len(data.train_loader) == 0:
        raise UserError(f"the training set has {len(train_set)} images, fewer than data.batch_size="
                        f"{cfg.data.batch_size}; lower the batch size")
    return Run(cfg, ctx, model, trainer, data, counts, stage)
