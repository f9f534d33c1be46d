"""What a run writes of its epochs: TensorBoard scalars and the JSON-lines metrics file
(`MetricsLog`), and the one line per epoch of train.log (`epoch_summary`)."""

from __future__ import annotations

import os

import torch

from engine.config import flatten
from engine.diagnostics import log_extras
from engine.evaluation import EvaluationReport
from engine.run_folder import METRICS_FILE, append_record
from rsg import LOSS_TERMS
from rsg import loss_weights as rsg_loss_weights


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
        text += " = " + weighted_terms(train, rsg_loss_weights(cfg.rsg))
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


def weighted_terms(train: dict, weights: dict) -> str:
    """'cls a + lambda1*cesc b + lambda2*mv c': Eq. 7's terms, each the epoch's mean, RSG's by its names."""
    rsg_terms = (f"{weights[term.name]:g}*{term.name} {train['loss_' + term.name]:.{term.decimals}f}"
                 for term in LOSS_TERMS)
    return " + ".join([f"cls {train['loss_cls']:.4f}", *rsg_terms])
