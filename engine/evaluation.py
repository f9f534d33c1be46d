"""Evaluate a saved checkpoint on the test (or validation) split of its config."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
from torch.utils.data import DataLoader

from core.errors import UserError
from data.builder import build_datasets
from data.registry import DATASETS
from data.datasets import report_unreadable
from engine.checkpoint import load_checkpoint, load_model_weights
from engine.config import config_from_dict
from engine.loop import predict
from engine.metrics import accuracy_report, format_group_table, shot_group
from engine.posthoc import build_correction, corrected_report, format_tau_table
from engine.runtime import resolve_device
from models import build_model, strip_rsg


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def write_per_class_csv(path: str, report: dict, train_counts, class_names) -> None:
    """Written to a temporary file, then renamed: a failure never leaves half a CSV."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        _write_rows(tmp, report, train_counts, class_names)
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"cannot write the per-class CSV {path}: {error.strerror or error}; "
                        f"choose another file with --output") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_rows(path: str, report: dict, train_counts, class_names) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "name", "train_count", "shot_group", "test_images", "accuracy"])
        for index, (count, accuracy) in enumerate(zip(train_counts, report["per_class"])):
            writer.writerow([index, class_names[index], count, shot_group(count), report["test_counts"][index],
                             "" if accuracy != accuracy else f"{accuracy:.4f}"])


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


def evaluate_checkpoint(path: str, overrides, csv_path: str, split: str = "test") -> dict:
    """Top-1 and many / medium / few of the checkpoint on `split` (test, or val for split lists);
    prints the table of the paper's Tables 8 and 9 and writes the per-class CSV."""
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], overrides)
    train_counts = state["class_counts"]
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, train_counts, with_rsg=False, load_pretrained_weights=False)  # weights: the checkpoint's
    describe = f"backbone {cfg.model.backbone}, {len(train_counts)} classes"
    load_model_weights(model, strip_rsg(state["model"]), path, describe)
    model.to(device)
    _, test_set = build_datasets(cfg.data, eval_split=split)
    check_fits(path, state, cfg, test_set, split)
    loader = DataLoader(test_set, cfg.data.eval_batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    correction = build_correction(cfg, model, train_counts)          # eval.posthoc (issue 14)
    if correction is None:
        predictions, targets = predict(model, loader, device, progress=cfg.train.progress)
        report = accuracy_report(predictions, targets, train_counts)
    else:
        report, targets = evaluate_corrected(cfg, model, correction, loader, device, train_counts, split)
    report_unreadable([test_set], f"evaluation on the {split} split")
    report["test_counts"] = [int((targets == c).sum()) for c in range(len(train_counts))]
    write_per_class_csv(csv_path, report, train_counts, test_set.classes)
    epochs = f"{state['epoch']} epoch{'' if state['epoch'] == 1 else 's'}"
    print(f"checkpoint {path} (after {epochs}, code {state.get('code_version', 'unknown')})")
    print(f"model: {cfg.model.backbone}, {count_parameters(model):,} parameters at evaluation (no RSG)")
    print(format_group_table(report, f"{cfg.data.name}, {split} split: {len(targets)} images, top-1 accuracy (%)"))
    print(f"top-1 error {100 - report['top1']:.2f}% (the measure of Tables 1-7)")
    if correction is not None:
        print(format_tau_table(report["posthoc"], f"every tau of eval.taus on the {split} split (%)"))
        json_path = write_posthoc_json(csv_path, report)
        print(f"every tau's per-class accuracy written to {json_path}")
    print(f"per-class accuracy written to {csv_path}")
    return report


def has_val_split(data_cfg) -> bool:
    """The split-list datasets have a validation list (split_list: when data.val_list names one)."""
    lists = DATASETS.info(data_cfg.name).get("split_lists", False)
    return lists and (data_cfg.name != "split_list" or bool(data_cfg.val_list))


def evaluate_corrected(cfg, model, correction, loader, device, train_counts, split: str):
    """The report at the tau chosen on the val split (evaluated first when `split` is test), or at
    eval.tau without one; returns (report, targets)."""
    chosen = None
    if split == "test" and has_val_split(cfg.data):
        _, val_set = build_datasets(cfg.data, eval_split="val")
        val_loader = DataLoader(val_set, cfg.data.eval_batch_size, shuffle=False, num_workers=cfg.data.num_workers)
        chosen = corrected_report(correction, model, val_loader, device, train_counts, "val")["posthoc"]["tau"]
    report = corrected_report(correction, model, loader, device, train_counts, split, chosen_tau=chosen,
                              fixed_tau=cfg.eval.tau)
    targets = loader.dataset.targets
    return report, np.asarray(targets, dtype=np.int64)


def write_posthoc_json(csv_path: str, report: dict) -> str:
    """<checkpoint>.posthoc.json beside the per-class CSV: the kind, the tau reported and how it was chosen, and for every tau its
    top-1, shot groups and per-class accuracy (NaN: a class without test images, written as null)."""
    path = csv_path.removesuffix(".csv").removesuffix(".per_class") + ".posthoc.json"
    per_tau = {f"{tau:g}": {"top1": r["top1"], "many": r["many"], "medium": r["medium"], "few": r["few"],
                            "per_class": [None if a != a else a for a in r["per_class"]]}
               for tau, r in report["by_tau_reports"].items()}
    content = {k: v for k, v in report["posthoc"].items() if k != "by_tau"} | {"by_tau": per_tau}
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
    return path
