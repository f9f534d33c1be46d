"""Evaluation, one path for train.py's evaluated epochs and eval.py's checkpoints: the evaluation
loader (`build_eval_loader`), the forward pass over it (`predict`, `predict_logits`), the numbers
(`Evaluator.report` -> `EvaluationReport`), and eval.py's table, per-class CSV and JSON report.

Train.py evaluates the model it trains on data.eval_split every train.eval_every epochs (engine/run.py);
eval.py rebuilds a checkpoint's model without RSG and evaluates it on one split, built alone
(data/builder.py build_eval_dataset): the training counts that define the shot groups come from the
checkpoint, so the training split is never loaded.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.errors import UserError
from data.builder import build_eval_dataset
from data.datasets import report_unreadable
from data.device_loader import DeviceLoader
from data.registry import DATASETS
from data.samplers import ShardSampler
from engine.checkpoint import file_sha256, load_checkpoint, load_model_weights, stored_config
from engine.distributed import gather_uneven
from engine.metrics import SHOT_GROUPS, accuracy_report, format_group_table, shot_group
from engine.posthoc import build_correction, corrected_report, format_tau_table, posthoc_kind
from engine.run_folder import CSV_HEADER, same_folder, written_by_eval
from engine.runtime import FULL_PRECISION, Precision, resolve_device
from models import build_model, strip_rsg

# ---------------------------------------------------------------------------------------------
# The loader and the forward pass


def build_eval_loader(cfg, dataset, device, ctx=None):
    """The evaluation loader of `dataset` as cfg.data configures it, for train.py and eval.py alike.

    data.loader device keeps the images on `device` (normalized only, in order, the last partial
    batch kept); standard is a DataLoader. Under torchrun (`ctx`, an engine.distributed
    DistributedContext) each rank reads its own shard (ShardSampler) and `predict` gathers them.
    """
    world_size = ctx.world_size if ctx is not None else 1
    sampler = ShardSampler(len(dataset), ctx.rank, world_size) if world_size > 1 else None
    if cfg.data.loader == "device":
        return DeviceLoader(dataset, cfg.data.eval_batch_size, device, train=False, sampler=sampler,
                            mean=cfg.data.mean, std=cfg.data.std)
    return DataLoader(dataset, cfg.data.eval_batch_size, sampler=sampler, shuffle=False,
                      num_workers=cfg.data.num_workers, pin_memory=torch.device(device).type == "cuda")


def predict(model, loader, device, progress=False, precision=None):
    """Predicted and true labels (N,) over a loader, with the model in evaluation mode.

    Under torchrun each rank predicts its shard (data/samplers.py ShardSampler) and the shards are
    gathered unpadded, so every image is counted once; every rank returns the whole result.
    """
    predictions, labels = _forward_all(model, loader, device, progress, precision, lambda z: z.argmax(dim=1))
    return predictions.cpu().numpy(), labels


def predict_logits(model, loader, device, progress=False, precision=None):
    """float32 logits (N, C) on the CPU and true labels (N,), gathered like `predict`'s: for the
    evaluation-time corrections of engine/posthoc.py, which need more than the argmax."""
    logits, labels = _forward_all(model, loader, device, progress, precision, lambda z: z.float())
    return logits.cpu(), labels


@torch.no_grad()
def _forward_all(model, loader, device, progress, precision, keep):
    """keep(logits) of every batch, concatenated and gathered over ranks; labels as int64 numpy."""
    model.eval()
    precision = precision or FULL_PRECISION
    kept, labels = [], []
    for images, targets in tqdm(loader, desc="eval", leave=False, disable=not progress):
        with precision.autocast():
            logits, _, _ = model(images.to(device, non_blocking=True))
        kept.append(keep(logits))
        labels.append(targets.to(device))
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=device), np.zeros(0, dtype=np.int64)
    kept, labels = torch.cat(kept), torch.cat(labels)
    row = kept.shape[1:]
    kept = gather_uneven(kept.reshape(-1)).reshape(-1, *row)      # gather_uneven takes 1-D tensors
    return kept, gather_uneven(labels.long()).cpu().numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class EvaluationReport:
    """One evaluation: what metrics.jsonl records per epoch, train.py logs at the end, and eval.py
    prints and writes (CSV, JSON). Accuracies in percent at full precision; a shot group without
    a class with test images is None, a class without test images NaN (null in JSON)."""
    split: str
    top1: float
    many: Optional[float]
    medium: Optional[float]
    few: Optional[float]
    per_class: list
    test_counts: list
    train_counts: list
    posthoc: Optional[dict] = None     # eval.posthoc: the kind, the tau, how it was chosen, every tau's groups
    by_tau: dict = field(default_factory=dict, repr=False)   # tau -> that tau's accuracy_report (posthoc.json)
    source: dict = field(default_factory=dict)   # eval.py: the checkpoint's path, sha256, epoch, config, code

    @classmethod
    def from_accuracy(cls, accuracy: dict, targets: np.ndarray, train_counts, split: str, **extra):
        """From engine.metrics.accuracy_report's dict and the true labels that it counted."""
        classes = len(train_counts)
        test_counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=classes)[:classes]
        return cls(split, float(accuracy["top1"]), *(accuracy[g] for g in SHOT_GROUPS), list(accuracy["per_class"]),
                   test_counts.tolist(), list(train_counts), **extra)

    @property
    def images(self) -> int:
        return int(sum(self.test_counts))

    def groups(self) -> dict:
        """top1 / many / medium / few: a metrics.jsonl record's figures of the evaluated split."""
        return {"top1": self.top1, "many": self.many, "medium": self.medium, "few": self.few}

    def per_class_or_none(self) -> list:
        """Per-class accuracies with None for a class without test images (JSON has no NaN)."""
        return [None if value != value else value for value in self.per_class]

    def table(self, title: str, footer=()) -> str:
        """The text block train.py logs and eval.py prints: the checkpoint (eval.py), the layout of
        the paper's Tables 8 and 9 (Many | Medium | Few | All), the top-1 error of Tables 1-7,
        every tau of eval.posthoc, then `footer` lines."""
        lines = []
        if self.source:
            epochs = f"{self.source['epoch']} epoch{'' if self.source['epoch'] == 1 else 's'}"
            lines += [f"checkpoint {self.source['checkpoint']} (after {epochs}, code {self.source['code_version']})",
                      f"model: {self.source['backbone']}, {self.source['parameters']:,} parameters at "
                      f"evaluation (no RSG)"]
        lines += [format_group_table(self.groups(), title),
                  f"top-1 error {100 - self.top1:.2f}% (the measure of Tables 1-7)"]
        if self.posthoc is not None:
            lines.append(format_tau_table(self.posthoc, f"every tau of eval.taus on the {self.split} split (%)"))
        return "\n".join(lines + list(footer))

    def to_json(self) -> dict:
        """The JSON report eval.py writes beside the per-class CSV (tools/collect_results.py reads it)."""
        content = {**self.source, "split": self.split, "images": self.images, **self.groups(),
                   "per_class": self.per_class_or_none(), "train_counts": self.train_counts,
                   "test_counts": self.test_counts}
        if self.posthoc is not None:
            content["posthoc"] = self.posthoc
        return content


@dataclass
class Evaluator:
    """A model to evaluate and what its forward passes need: train.py's run and eval.py's checkpoint
    both evaluate through `report`, so that an epoch's figures and eval.py's are computed alike."""
    cfg: object
    model: torch.nn.Module
    device: torch.device
    train_counts: list
    precision: Optional[Precision] = None      # None: float32
    progress: bool = False

    def report(self, loader, split: str, chosen_tau: Optional[float] = None) -> EvaluationReport:
        """Top-1, shot groups and per class on `loader`'s split; with eval.posthoc, at the tau
        `chosen_tau` (chosen on the val split before), else chosen as engine/posthoc.py says."""
        correction = build_correction(self.cfg, self.model, self.train_counts)     # eval.posthoc (engine/posthoc.py)
        if correction is None:
            predictions, targets = predict(self.model, loader, self.device, self.progress, self.precision)
            return EvaluationReport.from_accuracy(accuracy_report(predictions, targets, self.train_counts),
                                                  targets, self.train_counts, split)
        logits, targets = predict_logits(self.model, loader, self.device, self.progress, self.precision)
        corrected = corrected_report(correction, logits, targets, self.train_counts, split, chosen_tau,
                                     self.cfg.eval.tau)
        return EvaluationReport.from_accuracy(corrected, targets, self.train_counts, split,
                                              posthoc=corrected["posthoc"], by_tau=corrected["by_tau_reports"])


# ---------------------------------------------------------------------------------------------
# eval.py: a checkpoint


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_fits(path: str, state: dict, cfg, test_set, split: str) -> None:
    """The evaluation set must be the one the checkpoint was trained for: the same classes (their
    number, and the labels inside it), or the shot groups and the per-class table mean nothing."""
    trained = len(state["class_counts"])
    stored = state["config"]["data"]
    what = f"{cfg.data.name} ({split} split, data.root {cfg.data.root})"
    if test_set.num_classes != trained:
        raise UserError(f"checkpoint {path} was trained on {trained} classes ({stored.get('name')}), but the "
                        f"evaluation set {what} has {test_set.num_classes}; evaluate it on the dataset it was "
                        f"trained on (drop the data.* overrides, or point data.root at that dataset)")
    labels = set(test_set.targets)
    if labels and (min(labels) < 0 or max(labels) >= trained):
        raise UserError(f"the evaluation set {what} has labels outside 0..{trained - 1}, the classes of "
                        f"checkpoint {path}; evaluate it on the dataset it was trained on")


def checkpoint_evaluator(path: str, state: dict, cfg) -> Evaluator:
    """The checkpoint's model without RSG (the evaluated network is exactly the plain backbone and
    head), its weights loaded strictly, in float32 on train.device."""
    train_counts = state["class_counts"]
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, train_counts, with_rsg=False, load_pretrained_weights=False)  # weights: the checkpoint's
    describe = f"backbone {cfg.model.backbone}, {len(train_counts)} classes"
    load_model_weights(model, strip_rsg(state["model"]), path, describe)
    return Evaluator(cfg, model.to(device), device, train_counts, progress=cfg.train.progress)


def has_val_split(data_cfg) -> bool:
    """The split-list datasets have a validation list (split_list: when data.val_list names one)."""
    split_lists = DATASETS.info(data_cfg.name).get("split_lists", False)
    return split_lists and (data_cfg.name != "split_list" or bool(data_cfg.val_list))


def tau_chosen_on_val(evaluator: Evaluator, split: str) -> Optional[float]:
    """eval.posthoc on the test split of a dataset with a val split: the tau is chosen there first,
    as train.py chose it, never on the test split itself; None otherwise."""
    cfg = evaluator.cfg
    if posthoc_kind(cfg) == "none" or split != "test" or not has_val_split(cfg.data):
        return None
    val_set = build_eval_dataset(cfg.data, "val")
    return evaluator.report(build_eval_loader(cfg, val_set, evaluator.device), "val").posthoc["tau"]


def checkpoint_source(path: str, state: dict, cfg, model) -> dict:
    """What the JSON report says of the evaluated checkpoint (and the table's first two lines)."""
    return {"checkpoint": os.path.abspath(path), "sha256": file_sha256(path), "epoch": state["epoch"],
            "config": cfg.name, "code_version": state.get("code_version", "unknown"),
            "backbone": cfg.model.backbone, "parameters": count_parameters(model)}


def evaluate_checkpoint(path: str, overrides, csv_path: str, split: str = "test") -> EvaluationReport:
    """Top-1 and many / medium / few of the checkpoint on `split` (test, or val for split lists);
    prints one block (the table of the paper's Tables 8 and 9) and writes the per-class CSV, the
    JSON report (and with eval.posthoc every tau's JSON) beside it."""
    state = load_checkpoint(path)
    cfg = stored_config(state, path, overrides)
    check_outputs(csv_path, path)
    evaluator = checkpoint_evaluator(path, state, cfg)
    dataset = build_eval_dataset(cfg.data, split)
    check_fits(path, state, cfg, dataset, split)
    chosen = tau_chosen_on_val(evaluator, split)
    report = evaluator.report(build_eval_loader(cfg, dataset, evaluator.device), split, chosen)
    report_unreadable([dataset], f"evaluation on the {split} split")
    report.source = checkpoint_source(path, state, cfg, evaluator.model)
    written = write_evaluation_files(report, csv_path, dataset.classes)
    print(report.table(f"{cfg.data.name}, {split} split: {report.images} images, top-1 accuracy (%)", written))
    return report


# ---------------------------------------------------------------------------------------------
# eval.py's files


def check_outputs(csv_path: str, checkpoint: str) -> None:
    """Before anything is evaluated: each file eval.py may write (the CSV, the JSON report, every
    tau's JSON) is new, or one it wrote for this checkpoint: the default names beside it, or files
    whose report names it. Another checkpoint's evaluation is never passed off as this one's."""
    paths = (csv_path, evaluation_file(csv_path, ".report.json"), evaluation_file(csv_path, ".posthoc.json"))
    existing = [path for path in paths if os.path.lexists(path)]
    for path in existing:
        if not written_by_eval(path):
            raise UserError(f"eval.py would write {path} (for --output {csv_path}), but that file exists and is not "
                            f"one eval.py wrote; it replaces only its own files: choose another --output")
    if not existing or same_folder(csv_path, default_output(checkpoint, csv_path)):
        return
    reported = reported_checkpoint(paths[1])
    if reported is None or not same_folder(reported, checkpoint):
        raise UserError(f"--output {csv_path} holds the evaluation of {reported or 'another checkpoint'}, not of "
                        f"{checkpoint}; eval.py replaces only the evaluation of the same checkpoint: "
                        f"choose another --output")


def default_output(checkpoint: str, csv_path: str) -> str:
    """The name eval.py gives the CSV when --output is not given (the split read off `csv_path`)."""
    suffix = ".val.per_class.csv" if csv_path.endswith(".val.per_class.csv") else ".per_class.csv"
    return os.path.splitext(checkpoint)[0] + suffix


def reported_checkpoint(report_path: str) -> Optional[str]:
    """The checkpoint a JSON report of eval.py's names (`checkpoint_source`), or None."""
    try:
        with open(report_path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return None
    checkpoint = content.get("checkpoint") if isinstance(content, dict) else None
    return checkpoint if isinstance(checkpoint, str) else None


def evaluation_file(csv_path: str, suffix: str) -> str:
    """A file beside the per-class CSV: <stem>.per_class.csv -> <stem><suffix>."""
    return csv_path.removesuffix(".csv").removesuffix(".per_class") + suffix


def write_evaluation_files(report: EvaluationReport, csv_path: str, class_names) -> list:
    """The JSON report, every tau's JSON (eval.posthoc), then the per-class CSV; the lines saying
    where. The CSV comes last: the table runner takes it as the sign that a run is evaluated."""
    json_path = evaluation_file(csv_path, ".report.json")
    write_atomically(json_path, lambda f: json.dump(report.to_json(), f, indent=1), "JSON report")
    lines = []
    if report.posthoc is not None:
        lines.append(f"every tau's per-class accuracy written to {write_posthoc_json(csv_path, report)}")
    write_per_class_csv(csv_path, report, class_names)
    return lines + [f"per-class accuracy written to {csv_path}", f"report written to {json_path}"]


def write_atomically(path: str, write, what: str) -> None:
    """`write(file)` into a temporary file, then renamed: a failure never leaves half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"cannot write the {what} {path}: {error.strerror or error}; "
                        f"choose another file with --output") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_per_class_csv(path: str, report: EvaluationReport, class_names) -> None:
    write_atomically(path, lambda f: _write_rows(f, report, class_names), "per-class CSV")


def _write_rows(f, report: EvaluationReport, class_names) -> None:
    writer = csv.writer(f)
    writer.writerow(CSV_HEADER)
    for index, (count, accuracy) in enumerate(zip(report.train_counts, report.per_class)):
        writer.writerow([index, class_names[index], count, shot_group(count), report.test_counts[index],
                         "" if accuracy != accuracy else f"{accuracy:.4f}"])


def write_posthoc_json(csv_path: str, report: EvaluationReport) -> str:
    """<checkpoint>.posthoc.json beside the per-class CSV: the kind, the tau reported and how it was
    chosen, and for every tau its top-1, shot groups and per-class accuracy (NaN: a class without
    test images, written as null)."""
    path = evaluation_file(csv_path, ".posthoc.json")
    per_tau = {f"{tau:g}": {"top1": r["top1"], "many": r["many"], "medium": r["medium"], "few": r["few"],
                            "per_class": [None if a != a else a for a in r["per_class"]]}
               for tau, r in report.by_tau.items()}
    content = {k: v for k, v in report.posthoc.items() if k != "by_tau"} | {"by_tau": per_tau}
    write_atomically(path, lambda f: json.dump(content, f, indent=1), "post-hoc JSON")
    return path
