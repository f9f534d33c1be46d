"""RSG's internals per epoch: the statistics its module leaves in `RSG.diagnostics` at every
training step, summed on the device and read on the host once, at the end of the epoch.

The per-step cost is a few additions of 0-dim tensors (and two (classes, K) tensors); nothing is
read on the host inside the epoch. The epoch's values go into metrics.jsonl (`train` as
`rsg_<name>`, per-class center use in `rsg_classes`) and TensorBoard (`train/rsg_<name>`), beside
the per-class accuracy of each evaluated epoch (`test_per_class`, or `val_per_class` for runs
that evaluate on the validation list).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from rsg import CLASS_DIAGNOSTICS, RSG, SCALAR_DIAGNOSTICS

# Every statistic RSG.diagnostics may hold, in RSG's fixed order (rsg/contract.py): under torchrun every
# rank reduces the same tensor even when some statistic never occurred on it (no rare sample).
SCALARS = tuple(SCALAR_DIAGNOSTICS)
PER_CLASS = tuple(CLASS_DIAGNOSTICS)
# Per-class test accuracies go to TensorBoard one scalar per class only up to this many classes
# (metrics.jsonl always has them all).
MAX_PER_CLASS_SCALARS = 100


def find_rsg(model: torch.nn.Module) -> Optional[RSG]:
    """The RSG module inside `model` (a LongTailClassifier, an rsg.attach wrapper, DDP...), or None."""
    return next((module for module in model.modules() if isinstance(module, RSG)), None)


class DiagnosticsSums:
    """Sums over the steps of an epoch of the RSG module's detached statistics."""

    def __init__(self, model: torch.nn.Module):
        self.rsg = find_rsg(model)
        self.sums: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = {}

    def add(self) -> None:
        """After a training step: add what the step's forward recorded (device tensors only)."""
        if self.rsg is None:
            return
        for name, value in self.rsg.diagnostics.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.steps[name] = self.steps.get(name, 0) + 1

    def shapes(self) -> dict:
        shapes = {name: () for name in SCALARS}
        shapes.update({name: (self.rsg.num_classes, self.rsg.num_centers) for name in PER_CLASS})
        return shapes

    def device_totals(self, device) -> torch.Tensor:
        """The epoch's sums, then how many steps recorded each statistic, as one flat float64 device
        tensor (empty without RSG): the loop all-reduces and reads it with its own numbers, so the
        epoch end stays one all-reduce and one host read."""
        if self.rsg is None:
            return torch.zeros(0, dtype=torch.float64, device=device)
        shapes = self.shapes()
        sums = [self.sums.get(name, torch.zeros(shape, device=device)).reshape(-1).double()
                for name, shape in shapes.items()]
        steps = torch.tensor([float(self.steps.get(name, 0)) for name in shapes], dtype=torch.float64, device=device)
        return torch.cat(sums + [steps])

    def epoch_values(self, totals: list) -> tuple[dict, dict]:
        """(scalars for the `train` metrics, per-class lists for `rsg_classes`) from `device_totals`
        read on the host (under torchrun: summed over the ranks)."""
        if self.rsg is None:
            return {}, {}
        shapes = self.shapes()
        steps = totals[len(totals) - len(shapes):]
        values, offset = {}, 0
        for (name, shape), count in zip(shapes.items(), steps):
            size = math.prod(shape)
            if count:       # recorded at least once in the epoch (on some rank)
                chunk = totals[offset:offset + size]
                values[name] = ([chunk[row * shape[1]:(row + 1) * shape[1]] for row in range(shape[0])]
                                if name in PER_CLASS else chunk[0] / count)     # host numbers only
            offset += size
        usage = center_use(values)
        return scalar_metrics(values, usage), usage


def scalar_metrics(values: dict, usage: dict) -> dict:
    """`rsg_<name>` for each statistic, and the mean and smallest center use over the classes."""
    scalars = {f"rsg_{name}": value for name, value in values.items() if name not in PER_CLASS}
    if usage:
        used = [u for u in usage["centers_used"] if u is not None]
        scalars["rsg_centers_used"] = sum(used) / len(used) if used else None
        scalars["rsg_centers_used_min"] = min(used) if used else None
    return {k: v for k, v in scalars.items() if v is not None}


def center_use(values: dict) -> dict:
    """Per class: exp(entropy) of the class's mean soft assignment (the effective number of the K
    centers it uses, 1..K), and how many centers are the most probable one of at least one sample."""
    if "assignment_mass" not in values:
        return {}
    mass, hits = values["assignment_mass"], values["assignment_argmax"]     # (classes, K) lists
    used, argmax_used = [], []
    for class_mass, class_hits in zip(mass, hits):
        total = sum(class_mass)
        if total <= 0:                      # a class absent from every batch of the epoch
            used.append(None)
            argmax_used.append(None)
            continue
        entropy = -sum(m / total * math.log(max(m / total, 1e-12)) for m in class_mass)
        used.append(round(math.exp(entropy), 4))
        argmax_used.append(sum(1 for h in class_hits if h > 0))
    return {"centers_used": used, "centers_argmax": argmax_used}


def test_per_class(per_class: list) -> list:
    """Per-class test accuracies (%) for metrics.jsonl: None for a class without test images."""
    return [None if value != value else round(value, 4) for value in per_class]  # NaN -> None


def log_extras(writer, record: dict) -> None:
    """TensorBoard: the per-class accuracies of an evaluated epoch (small label sets only), under
    the evaluated split's name (test_per_class, val_per_class)."""
    epoch = record["epoch"]
    for key in ("test_per_class", "val_per_class"):
        accuracies = record.get(key) or []
        if len(accuracies) <= MAX_PER_CLASS_SCALARS:
            for index, value in enumerate(accuracies):
                if value is not None:
                    writer.add_scalar(f"{key}/class_{index:03d}", value, epoch)
