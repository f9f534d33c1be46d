"""The training step never makes the host wait for the device before T_th, and once per step after
it (RSG's number of generated samples depends on the labels): counted during real training steps
of the engine (build_run, start_epoch_state, train_one_epoch) with tests/host_sync.py.

Allowed, and named here: host-side data work (the epoch's sample order drawn by data/samplers.py,
and the standard DataLoader's per-image transforms), a logging step's one read of its losses (every `log_every` steps), and the epoch's
one read of its totals at the end.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import TINY_STEPS_PER_EPOCH, tiny_config_dict, torch_globals_restored, write_config
from engine.config import load_config
from engine.distributed import DistributedContext
from engine.loop import train_one_epoch
from engine.build import build_run
from engine.run import start_epoch_state
from host_sync import HostSyncCounter
from losses.registry import LOSSES

LOG_EVERY = 3                                  # steps 2, 5, ... are logging steps
# Host tensors by construction, whatever the device: the epoch's order (the samplers), and with
# the standard loader the DataLoader's per-image transforms (in worker processes when num_workers > 0).
HOST_SIDE = ("data/samplers.py", "data/datasets.py")
# RSG reads the labels' range only from a CPU tensor, where the values are on the host already: on an
# accelerator RSG.check_label_range returns before reading anything.
HOST_ONLY_CHECKS = {"check_label_range"}
RSG_SYNC = "pair_frequent_with_rare"           # the one sync of a step from T_th
LOGGING_SYNC = "logged_values"                 # the one sync of a logging step
EPOCH_END_SYNC = "epoch_metrics"               # the epoch's totals, read once after the last step


class LabelledLoader:
    """The loader, labelling the counter with (epoch, "start") while the epoch's iterator is made,
    (epoch, step) while each batch is made and trained on, and (epoch, "end") after the last."""

    def __init__(self, loader, counter: HostSyncCounter, epoch: int):
        self.loader, self.counter, self.epoch = loader, counter, epoch

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        # Not checked: a DataLoader's iterator draws its base seed from a host generator when it starts.
        self.counter.label = (self.epoch, "start")
        batches = iter(self.loader)
        for step in itertools.count():
            self.counter.label = (self.epoch, step)
            try:
                batch = next(batches)
            except StopIteration:
                break
            yield batch
        self.counter.label = (self.epoch, "end")


def count_syncs(tmp_path, epochs=(0, 1), **sections) -> HostSyncCounter:
    """Train the tiny config (RSG generating from epoch 1) for `epochs` under the counter."""
    tree = tiny_config_dict(tmp_path / "run", **sections)
    tree["train"]["log_every"] = LOG_EVERY
    cfg = load_config(write_config(tmp_path / "config.yaml", tree))
    with torch_globals_restored():
        run = build_run(cfg, DistributedContext(), torch.device("cpu"), resuming=False)
        counter = HostSyncCounter()
        for epoch in epochs:
            _, weights = start_epoch_state(run, epoch, 0)
            with counter:
                loader = LabelledLoader(run.data.train_loader, counter, epoch)
                train_one_epoch(run.trainer, loader, epoch, weights, cfg.train.log_every)
    return counter


def functions(events) -> list[str]:
    return [event.where.rsplit(" ", 1)[-1] for event in events]


def check_epochs(counter: HostSyncCounter, threshold_epoch: int = 1, epochs=(0, 1)) -> None:
    generated_somewhere = False
    for epoch in epochs:
        for step in range(TINY_STEPS_PER_EPOCH):
            events = [e for e in counter.labelled((epoch, step))
                      if not e.where.startswith(HOST_SIDE) and functions([e])[0] not in HOST_ONLY_CHECKS]
            logging = [e for e in events if e.where.endswith(" " + LOGGING_SYNC)]
            rest = [e for e in events if e not in logging]
            context = f"epoch {epoch} step {step}: {events}"
            assert len(logging) == ((step + 1) % LOG_EVERY == 0), context
            if epoch < threshold_epoch:
                assert rest == [], context
            else:
                assert len(rest) <= 1 and set(functions(rest)) <= {RSG_SYNC}, context
                generated_somewhere |= len(rest) == 1
        end = counter.labelled((epoch, "end"))
        assert functions(end) == [EPOCH_END_SYNC], end
    assert generated_somewhere or threshold_epoch > max(epochs), "the RSG sync was never seen: is the counter blind?"


@pytest.mark.slow
@pytest.mark.parametrize("data, train", [
    ({"loader": "device"}, {}),
    ({"loader": "device"}, {"amp": "bf16"}),
    ({"loader": "standard"}, {}),
], ids=["device-fp32", "device-bf16", "standard-fp32"])
def test_no_host_sync_before_the_threshold_and_one_after(tmp_path, data, train):
    counter = count_syncs(tmp_path, data=data, train=train)
    check_epochs(counter)


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(set(LOSSES.names()) - {"ldam"}))
def test_every_loss_keeps_the_step_free_of_host_syncs(tmp_path, loss):
    counter = count_syncs(tmp_path, data={"loader": "device"}, loss={"name": loss})
    check_epochs(counter)


@pytest.mark.slow
def test_without_rsg_no_step_syncs(tmp_path):
    counter = count_syncs(tmp_path, data={"loader": "device"}, rsg={"enabled": False})
    check_epochs(counter, threshold_epoch=2)


# ---------------------------------------------------------------------------------------------
# The counter itself: it sees each kind of sync, once, and nothing else


def syncs_of(action) -> list[str]:
    with HostSyncCounter() as counter:
        action()
    return [event.what for event in counter.events]


x = torch.arange(6.0)
mask = x > 2


@pytest.mark.parametrize("name, action", [
    ("item", lambda: x[0].item()),
    ("float", lambda: float(x.sum())),
    ("bool", lambda: bool(x.sum() > 0)),
    ("if", lambda: 1 if x[1] else 0),
    ("tolist", lambda: x.tolist()),
    ("nonzero", lambda: mask.nonzero()),
    ("where(condition)", lambda: torch.where(mask)),
    ("boolean index", lambda: x[mask]),
    ("boolean index in a tuple", lambda: x.view(2, 3)[mask.view(2, 3)[:, 0], :]),
    ("boolean assignment", lambda: x.clone().__setitem__(mask, 0.0)),
    ("masked_select", lambda: x.masked_select(mask)),
    ("unique", lambda: torch.unique(x)),
    ("repeat_interleave", lambda: x.repeat_interleave(torch.ones(6, dtype=torch.long))),
    ("bincount", lambda: torch.bincount(x.long())),
    ("equal", lambda: torch.equal(x, x)),
    ("f-string", lambda: f"{x.sum():.2f}"),
])
def test_counter_sees_each_sync_once(name, action):
    assert len(syncs_of(action)) == 1, syncs_of(action)


def test_counter_sees_syncs_inside_backward():
    """A backward formula runs from the autograd engine, where the Python layer (TorchFunctionMode)
    is not active: the aten layer still sees the scalar read."""
    class SyncingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            return value * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2 if grad.sum() > 0 else grad

    weight = torch.ones(3, requires_grad=True)
    assert syncs_of(lambda: SyncingBackward.apply(weight).sum().backward()) == ["aten._local_scalar_dense"]


@pytest.mark.parametrize("name, action", [
    ("len and shape", lambda: (len(x), x.shape[0], x.size(0))),
    ("integer indexing", lambda: x[torch.tensor([0, 2])]),
    ("slicing", lambda: x[1:3]),
    ("elementwise, reductions, argmax", lambda: ((x * 2).sum(), x.argmax(), torch.where(mask, x, 0.0))),
    ("sort, randperm, arange", lambda: (torch.sort(mask.to(torch.uint8), stable=True), torch.randperm(4),
                                        torch.arange(3))),
    ("repeat_interleave with output_size", lambda: x.repeat_interleave(torch.ones(6, dtype=torch.long),
                                                                       output_size=6)),
    ("a copy on the same device", lambda: x.to("cpu")),
])
def test_counter_ignores_what_does_not_sync(name, action):
    assert syncs_of(action) == []
