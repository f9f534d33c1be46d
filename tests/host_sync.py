"""Count the calls that make the host wait for the device (host synchronisations), on any device.

On a GPU, Python runs ahead of the kernels it queues until something needs a value or a shape that
only the device knows: `.item()`, `float(t)`, `bool(t)` (an `if` on a tensor), `.tolist()`,
`.cpu()` / `.numpy()`, ops whose output size depends on the data (`nonzero`, `masked_select`,
boolean-mask indexing, `unique`, `repeat_interleave` without `output_size`, `bincount`), and
comparisons that return a Python bool (`equal`, `allclose`). Each such call stalls the queue.

`HostSyncCounter` sees them in two layers, so that a CPU run shows what a GPU run would wait for:
- a `torch.overrides.TorchFunctionMode` sees every call made from Python (methods and functions,
  `Tensor.__bool__`, `__float__`, `tolist`, boolean indices given to `__getitem__`), and
- a `TorchDispatchMode` sees the aten ops below, which also catches syncs made inside other ops and
  in the backward pass (`aten._local_scalar_dense` is what every scalar read comes down to).
A Python call that is counted does not count again for the aten ops it runs.

Copies between the host and the device wait too (a copy to the host always; one to the device
unless non_blocking, since torch synchronises the stream after a blocking copy): they are counted
when the counter runs on an accelerator, and cannot be seen on a CPU run, where every tensor is on
the host. Not counted: `len()` or `.shape` of a tensor (its size is known on the host; when it came
from a data-dependent op, that op was the sync and is counted).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)

_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__", "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "equal",
            "allclose", "is_nonzero", "__repr__", "__format__")
_FUNCTIONS = ("nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "equal",
              "allclose", "is_nonzero")
SYNC_CALLS = {getattr(torch.Tensor, name) for name in _METHODS} | {getattr(torch, name) for name in _FUNCTIONS}

SYNC_OPS = {"_local_scalar_dense", "nonzero", "nonzero_numpy", "masked_select", "_unique", "_unique2",
            "unique_dim", "unique_consecutive", "bincount", "equal", "is_nonzero"}
INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}   # a sync with a boolean mask only


@dataclass(frozen=True)
class HostSync:
    what: str        # the call or op, e.g. "Tensor.item", "aten.nonzero"
    where: str       # the innermost frame in the repository outside tests/: "rsg/module.py:182 pair_..."
    label: object    # what the counter was labelled with when it happened (e.g. the step)


def _is_bool_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.bool


def _has_bool_index(index) -> bool:
    items = index if isinstance(index, (tuple, list)) else (index,)
    return any(_is_bool_tensor(item) for item in items)


def _call_syncs(func, args, kwargs) -> bool:
    if func in SYNC_CALLS:
        return True
    if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
        return len(args) > 1 and _has_bool_index(args[1])
    if func in (torch.where, torch.Tensor.where):            # torch.where(condition) is nonzero
        return len(args) + len(kwargs) == 1
    if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        if len(args) == 1 and func is torch.repeat_interleave and isinstance(args[0], torch.Tensor):
            repeats = args[0]                                 # repeat_interleave(repeats)
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    return False   # copies (.to, .cpu) are judged at the aten level, where source and target are known


def _op_syncs(func, args, kwargs) -> bool:
    name = func._overloadpacket.__name__
    if name in SYNC_OPS:
        return True
    if name == "repeat_interleave":                  # the output size is sum(repeats) unless given
        return func._overloadname == "Tensor" and kwargs.get("output_size") is None
    if name in INDEX_OPS and len(args) > 1:
        return _has_bool_index(args[1])
    if name == "_to_copy" and args and isinstance(args[0], torch.Tensor):
        return _copy_waits(args[0].device, kwargs.get("device") or args[0].device, kwargs.get("non_blocking", False))
    if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return _copy_waits(args[1].device, args[0].device, args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    return False


def _copy_waits(source: torch.device, target, non_blocking: bool) -> bool:
    """A copy between the host and an accelerator: to the host it always waits; to the device it
    waits unless non_blocking (torch synchronises the stream after a blocking copy)."""
    source, target = torch.device(source), torch.device(target)
    if source.type == target.type:
        return False
    return target.type == "cpu" or not non_blocking


def _where() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        inside = path[len(ROOT):]
        installed = f"{os.sep}site-packages{os.sep}" in inside   # a .venv inside the checkout (CI's) is not ours
        if path.startswith(ROOT + os.sep) and path != HERE and f"{os.sep}tests{os.sep}" not in inside \
                and not installed:
            return f"{os.path.relpath(path, ROOT)}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "outside the repository"


class _FunctionLayer(TorchFunctionMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.counter.muted or not _call_syncs(func, args, kwargs):
            return func(*args, **kwargs)
        self.counter.record(f"Tensor.{func.__name__}" if hasattr(torch.Tensor, func.__name__) and
                            getattr(torch.Tensor, func.__name__) is func else f"torch.{func.__name__}")
        self.counter.muted += 1                 # the aten ops of this call are the same sync
        try:
            return func(*args, **kwargs)
        finally:
            self.counter.muted -= 1


class _DispatchLayer(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.counter.muted and _op_syncs(func, args, kwargs):
            self.counter.record(f"aten.{func._overloadpacket.__name__}")
        return func(*args, **kwargs)


class HostSyncCounter:
    """with HostSyncCounter() as counter: ...; counter.events lists every host synchronisation,
    each with the `label` set at the time (e.g. counter.label = ("step", 3))."""

    def __init__(self):
        self.events: list[HostSync] = []
        self.label = None
        self.muted = 0
        self._layers = (_FunctionLayer(self), _DispatchLayer(self))

    def record(self, what: str) -> None:
        self.events.append(HostSync(what, _where(), self.label))

    def __enter__(self):
        for layer in self._layers:
            layer.__enter__()
        return self

    def __exit__(self, *exc):
        for layer in reversed(self._layers):
            layer.__exit__(*exc)

    def labelled(self, label) -> list[HostSync]:
        return [event for event in self.events if event.label == label]
