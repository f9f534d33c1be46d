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
from typing import Callable, Optional

import torch
from tqdm import tqdm

from engine.diagnostics import DiagnosticsSums
from engine.distributed import all_reduce_sum, broadcast_flag
from engine.runtime import FULL_PRECISION

LOSS_TERMS = ("cls", "cesc", "mv", "total")


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


def training_step(model, criterion, optimizer, images, targets, class_weights, rsg_weights, precision=None):
    """One step of Eq. 7. Returns detached (losses dict, real-sample correct count, generated count)."""
    precision = precision or FULL_PRECISION
    with precision.autocast():
        logits, all_targets, rsg_losses = model(images, targets)
        cls = criterion(logits.float(), all_targets, class_weights)
    zero = cls.new_zeros(())
    cesc, mv = rsg_losses.get("cesc", zero), rsg_losses.get("mv", zero)
    total = cls + rsg_weights[0] * cesc + rsg_weights[1] * mv
    optimizer.zero_grad(set_to_none=True)
    precision.backward_and_step(total, optimizer)
    batch = len(targets)
    correct = (logits[:batch].detach().argmax(dim=1) == targets).sum()
    losses = {"cls": cls.detach(), "cesc": cesc.detach(), "mv": mv.detach(), "total": total.detach()}
    return losses, correct, len(all_targets) - batch


def train_one_epoch(model, loader, criterion, optimizer, epoch: int, *, device, class_weights,
                    rsg_weights, start_step=0, log_step: Optional[Callable] = None, log_every=20,
                    stop: Optional[StopRequest] = None, progress=True, precision=None) -> EpochResult:
    """Train for one epoch from `start_step`. Loss sums stay on the device; the host reads them
    (a synchronisation) only every `log_every` steps and at the end, to log and to stop on a
    non-finite loss before anything is saved. Under torchrun the epoch's metrics are summed over
    the ranks; `model` may be the DDP wrapper."""
    model.train()
    getattr(model, "module", model).set_epoch(epoch)
    sums = {name: torch.zeros((), device=device) for name in LOSS_TERMS}
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = generated = steps = 0
    diagnostics = DiagnosticsSums(model)       # RSG's internals, summed on the device
    started = time.time()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, dynamic_ncols=True,
               initial=start_step, total=start_step + len(loader))
    step = start_step
    for step, (images, targets) in enumerate(bar, start=start_step):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        losses, batch_correct, batch_generated = training_step(
            model, criterion, optimizer, images, targets, class_weights, rsg_weights, precision)
        for name in LOSS_TERMS:
            sums[name] += losses[name]
        correct += batch_correct
        diagnostics.add()
        seen += len(targets)
        generated += batch_generated
        steps += 1
        at_log_step = (step + 1) % log_every == 0
        if at_log_step:
            values = logged_values(losses, sums["total"], epoch, step)   # the logging step's one sync
            values["generated"] = batch_generated
            bar.set_postfix(loss=f"{values['total']:.3f}", gen=batch_generated)
            if log_step is not None:
                log_step(epoch, step, values)
        last_step = step + 1 == start_step + len(loader)
        if stop is not None and not last_step and stop.agreed(at_log_step, device):  # last step: finish the epoch
            bar.close()
            check_finite(sums["total"], epoch, step)
            return EpochResult(interrupted_at_step=step + 1)
    bar.close()
    if steps == 0:
        raise RuntimeError("the training loader yielded no batch: the training set is smaller than "
                           "data.batch_size (batches are drop_last)")
    # One all-reduce and one host read for the epoch's numbers; the finiteness check comes after
    # the all-reduce, so that under torchrun every rank sees a non-finite sum and stops alike.
    # RSG's diagnostics ride along in the same tensor.
    sums_and_correct = torch.stack([sums[name].double() for name in LOSS_TERMS] + [correct.double()])
    counts = torch.tensor([seen, generated, steps], dtype=torch.float64, device=device)
    totals = all_reduce_sum(torch.cat([sums_and_correct, counts, diagnostics.device_totals(device)])).tolist()
    losses_sum, correct_sum = totals[:len(LOSS_TERMS)], totals[len(LOSS_TERMS)]
    seen, generated, steps = totals[len(LOSS_TERMS) + 1:len(LOSS_TERMS) + 4]
    raise_if_not_finite(losses_sum[LOSS_TERMS.index("total")], epoch, step)
    metrics = {f"loss_{name}": losses_sum[i] / steps for i, name in enumerate(LOSS_TERMS)}
    metrics["accuracy"] = 100.0 * correct_sum / seen
    metrics["generated_per_step"] = generated / steps  # per rank and step under torchrun
    metrics["images_per_second"] = seen / max(time.time() - started, 1e-9)
    rsg_metrics, rsg_classes = diagnostics.epoch_values(totals[len(LOSS_TERMS) + 4:])
    metrics.update(rsg_metrics)
    return EpochResult(metrics=metrics, sections={"rsg_classes": rsg_classes} if rsg_classes else {})


def check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    raise_if_not_finite(float(loss_sum), epoch, step)


def raise_if_not_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLoss(epoch, step, value)


def logged_values(losses: dict, loss_sum: torch.Tensor, epoch: int, step: int) -> dict:
    """The step's losses as floats, after checking that the running loss sum is finite: one read
    from the device (a host synchronisation) for all of them."""
    numbers = torch.stack([loss_sum.float()] + [losses[name].float() for name in LOSS_TERMS]).tolist()
    raise_if_not_finite(numbers[0], epoch, step)
    return dict(zip(LOSS_TERMS, numbers[1:]))
