"""The training step and one epoch of training: plain loops, no hooks (evaluation: engine/evaluation.py).

Algorithm 1 of the paper reads off `train_one_epoch`: the model (backbone + RSG + head) returns the
classification logits of the real and generated samples, their targets, and RSG's losses; the
total loss is Eq. 7, L_cls + lambda1 L_CESC + lambda2 L_MV, and one backward pass routes each term
to the parameters it trains (see rsg/module.py for the routes).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
from tqdm import tqdm

from engine.diagnostics import DiagnosticsSums
from engine.distributed import all_reduce_sum, broadcast_flag
from engine.runtime import FULL_PRECISION, PhaseAwareDDP, Precision
from rsg import loss_weights as rsg_loss_weights


class NonFiniteLoss(RuntimeError):
    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"the training loss became {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value = epoch, step, value


class StopRequest:
    """Turns SIGINT and SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signal_number: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal_number is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_number = number

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def agreed(self, at_sync_point: bool, device) -> bool:
        """Whether to stop now. Under torchrun every rank must stop at the same step, so the ranks
        agree (a tiny all-reduce) at sync points only: every `log_every` steps and epoch ends."""
        if not torch.distributed.is_initialized():
            return self.requested
        return at_sync_point and broadcast_flag(self.requested, device)


@dataclass
class EpochResult:
    metrics: dict = field(default_factory=dict)
    interrupted_at_step: Optional[int] = None   # the next step to run, when a stop was requested
    sections: dict = field(default_factory=dict)  # further parts of the epoch's metrics.jsonl record


@dataclass
class Trainer:
    """What a training step uses: the network (the model, or its DDP wrapper for RSG's phase), the
    classification loss, the optimizer (None: nothing trains), the precision, the device, and the
    weight of each loss term in Eq. 7 (`loss_weights`)."""
    network: PhaseAwareDDP
    criterion: torch.nn.Module
    optimizer: Optional[torch.optim.Optimizer]
    precision: Precision
    device: torch.device
    weights: dict


def loss_weights(cfg) -> dict:
    """The weight of each loss term in the total (Eq. 7): L_cls + lambda1 L_CESC + lambda2 L_MV, RSG's
    weights by the names of its losses (rsg/contract.py)."""
    return {"cls": 1.0, **rsg_loss_weights(cfg.rsg)}


def training_step(model, criterion, optimizer, images, targets, class_weights, weights: dict, precision=None):
    """One step: the model returns the logits of the real and generated samples, their targets and
    its own losses; with the classification loss they are summed, each times its weight, into the
    total that one backward pass sends to the parameters it trains. Returns the detached terms
    (and the total), the real samples' correct count and the number of generated samples."""
    precision = precision or FULL_PRECISION
    with precision.autocast():
        logits, all_targets, model_losses = model(images, targets)
        terms = {"cls": criterion(logits.float(), all_targets, class_weights), **model_losses}
    total = sum(weights[name] * value for name, value in terms.items())
    optimizer.zero_grad(set_to_none=True)
    if precision.scaler is None:
        total.backward()
        optimizer.step()
    else:                              # fp16: the scaled loss, and a step skipped on inf/NaN gradients
        precision.scaler.scale(total).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
    batch = len(targets)
    correct = (logits[:batch].detach().argmax(dim=1) == targets).sum()
    detached = {name: value.detach() for name, value in terms.items()} | {"total": total.detach()}
    return detached, correct, len(all_targets) - batch


class EpochSums:
    """The epoch's running sums, kept on the device: each loss term (in a fixed order, the same on
    every rank), the correct count, RSG's internals; read on the host once, at the end."""

    def __init__(self, model, device):
        self.names = ("cls",) + tuple(getattr(model, "module", model).loss_names) + ("total",)
        self.device = device
        self.losses = {name: torch.zeros((), device=device) for name in self.names}
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.seen = self.generated = self.steps = 0
        self.diagnostics = DiagnosticsSums(model)

    def add(self, losses: dict, correct, batch: int, generated: int) -> None:
        for name in self.names:
            if name in losses:
                self.losses[name] += losses[name]
        self.correct += correct
        self.diagnostics.add()
        self.seen, self.generated, self.steps = self.seen + batch, self.generated + generated, self.steps + 1

    def epoch_metrics(self, epoch: int, step: int, seconds: float) -> EpochResult:
        """One all-reduce and one host read for the epoch's numbers; the finiteness check comes
        after the all-reduce, so that under torchrun every rank sees a non-finite sum and stops alike."""
        sums = [self.losses[name].double() for name in self.names] + [self.correct.double()]
        counts = torch.tensor([self.seen, self.generated, self.steps], dtype=torch.float64, device=self.device)
        totals = all_reduce_sum(torch.cat([torch.stack(sums), counts, self.diagnostics.device_totals(self.device)]))
        totals = totals.tolist()
        terms = len(self.names)
        correct, seen, generated, steps = totals[terms:terms + 4]
        raise_if_not_finite(totals[self.names.index("total")], epoch, step)
        metrics = {f"loss_{name}": totals[i] / steps for i, name in enumerate(self.names)}
        metrics["accuracy"] = 100.0 * correct / seen
        metrics["generated_per_step"] = generated / steps  # per rank and step under torchrun
        metrics["images_per_second"] = seen / max(seconds, 1e-9)
        rsg_metrics, rsg_classes = self.diagnostics.epoch_values(totals[terms + 4:])
        metrics.update(rsg_metrics)
        return EpochResult(metrics=metrics, sections={"rsg_classes": rsg_classes} if rsg_classes else {})


class StepLog(Protocol):
    """Where a logging step's losses go (engine.metrics_log.MetricsLog: TensorBoard). The loop knows
    only this method, so it imports nothing of the run's files."""

    def step(self, epoch: int, step: int, values: dict) -> None: ...


def train_one_epoch(trainer: Trainer, loader, epoch: int, class_weights, log_every: int, start_step: int = 0,
                    stop: Optional[StopRequest] = None, metrics_log: Optional[StepLog] = None,
                    progress: bool = False) -> EpochResult:
    """Algorithm 1 for one epoch, from `start_step`: for each batch of `loader`, the model (backbone,
    RSG at its position, head) makes the features, the generated rare-class samples and RSG's
    losses, and one step minimises Eq. 7. The host reads the device (a synchronisation) only every
    `log_every` steps and at the end. Under torchrun the metrics are summed over the ranks."""
    model, device = trainer.network.for_current_phase(), trainer.device   # RSG's phase: set_epoch before
    model.train()
    sums = EpochSums(model, device)
    started = time.time()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True, initial=start_step,
               total=start_step + len(loader), disable=not progress)
    step = start_step
    for step, (images, targets) in enumerate(bar, start=start_step):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        losses, correct, generated = training_step(model, trainer.criterion, trainer.optimizer, images, targets,
                                                   class_weights, trainer.weights, trainer.precision)
        sums.add(losses, correct, len(targets), generated)
        at_log_step = (step + 1) % log_every == 0
        if at_log_step:
            log_step(metrics_log, bar, losses, sums, epoch, step, generated)
        last_step = step + 1 == start_step + len(loader)
        if stop is not None and not last_step and stop.agreed(at_log_step, device):  # last step: finish the epoch
            bar.close()
            check_finite(sums.losses["total"], epoch, step)
            return EpochResult(interrupted_at_step=step + 1)
    bar.close()
    if sums.steps == 0:
        raise RuntimeError("the training loader yielded no batch: the training set is smaller than "
                           "data.batch_size (batches are drop_last)")
    return sums.epoch_metrics(epoch, step, time.time() - started)


def log_step(metrics_log: Optional[StepLog], bar, losses: dict, sums: EpochSums, epoch: int, step: int,
             generated: int) -> None:
    """A logging step: its losses (one host read, after checking the running total is finite) to
    the progress bar and TensorBoard."""
    values = logged_values(losses, sums.losses["total"], epoch, step)
    values["generated"] = generated
    bar.set_postfix(loss=f"{values['total']:.3f}", gen=generated)
    if metrics_log is not None:
        metrics_log.step(epoch, step, values)


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    raise_if_not_finite(float(loss_sum), epoch, step)


def raise_if_not_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLoss(epoch, step, value)


def logged_values(losses: dict, loss_sum: torch.Tensor, epoch: int, step: int) -> dict:
    """The step's losses as floats, after checking that the running loss sum is finite: one read
    from the device (a host synchronisation) for all of them."""
    names = list(losses)
    numbers = torch.stack([loss_sum.float()] + [losses[name].float() for name in names]).tolist()
    raise_if_not_finite(numbers[0], epoch, step)
    return dict(zip(names, numbers[1:]))
