"""Where a run executes: device, seeds, logging, precision, and the DDP wrapper."""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from core import LOGGER_NAME
from core.errors import UserError

log = logging.getLogger(LOGGER_NAME)


class HeldRecords(logging.Handler):
    """Keeps the records logged before the run owns its folder, for `log_to_file` to write first."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


LOG_FORMAT = ("%(asctime)s %(message)s", "%H:%M:%S")


def setup_logging(output_dir: str = "", is_main: bool = True) -> None:
    """Rank 0 logs INFO to the terminal and (from `log_to_file` on, or at once when `output_dir` is
    given) to output_dir/train.log; other ranks only warnings."""
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()
    log.propagate = False
    terminal = logging.StreamHandler()
    terminal.setFormatter(logging.Formatter(*LOG_FORMAT))
    log.addHandler(terminal)
    if is_main:
        log.addHandler(HeldRecords())
    if output_dir and is_main:
        log_to_file(output_dir)


def log_to_file(output_dir: str) -> None:
    """Append the log to output_dir/train.log from now on, starting with the records held so far."""
    handler = logging.FileHandler(os.path.join(output_dir, "train.log"))
    handler.setFormatter(logging.Formatter(*LOG_FORMAT))
    for held in [h for h in log.handlers if isinstance(h, HeldRecords)]:
        for record in held.records:
            handler.handle(record)
        log.removeHandler(held)
    log.addHandler(handler)


def log_to_file_only(message: str, exc_info=None) -> None:
    """An error that ends the run, into train.log: the entry point prints it on the terminal
    (one line), and an unexpected exception prints its own traceback there."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), exc_info)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


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


def generator_states(device: torch.device) -> dict:
    """The state of every generator `seed_everything` seeds (and the GPU's), as plain values: what a
    checkpoint taken mid-epoch keeps, so that the rest of the epoch draws what an unbroken run draws."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
              "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_generator_states(states: dict, device: torch.device) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def set_determinism(deterministic: bool) -> None:
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively: on a GPU, or a CPU whose oneDNN has bf16 kernels
    (AVX512-BF16, AMX). Elsewhere bf16 is emulated on the CPU, slower than float32."""
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Precision:
    """`train.amp`: none (float32), bf16 (autocast), or fp16 (autocast with a gradient scaler).
    bf16 on a CPU without native bf16 runs in float32 instead, and says so: there it would only be
    slower (docs/BENCHMARKS.md)."""

    def __init__(self, mode: str, device: torch.device):
        if mode == "bf16" and not has_native_bf16(device):
            log.warning("train.amp=bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is slower "
                        "than float32; running in float32")
            mode = "none"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FULL_PRECISION = Precision("none", torch.device("cpu"))  # float32: no autocast, no scaler


class PhaseAwareDDP:
    """DistributedDataParallel that follows RSG's phases without a find-unused-parameters pass.

    RSG trains the contrastive module only before T_th and T only from it (`RSG.set_epoch` sets
    requires_grad accordingly). DDP expects every parameter that requires a gradient to get one in
    every step, so the wrapper is rebuilt whenever the set of trainable parameters changes, once
    per run. Without a process group it is the model itself.
    """

    def __init__(self, model: torch.nn.Module, distributed: bool, device: torch.device):
        self.model, self.distributed, self.device = model, distributed, device
        self.signature, self.wrapped = None, model

    def for_current_phase(self) -> torch.nn.Module:
        if not self.distributed:
            return self.model
        signature = tuple(p.requires_grad for p in self.model.parameters())
        if signature != self.signature:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=device_ids)
            self.signature = signature
        return self.wrapped


def prepare_model(model: torch.nn.Module, train_cfg, distributed: bool, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm, channels_last and compilation, as `train` asks."""
    if train_cfg.sync_bn and distributed:
        if device.type != "cuda":
            raise UserError("key 'train.sync_bn': SyncBatchNorm works on CUDA devices only (DDP refuses it on "
                            "the CPU); set train.sync_bn=false")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if train_cfg.compile:
        # In place (nn.Module.compile): parameter names, hence checkpoints, stay those of the
        # uncompiled model. RSG changes the batch size from T_th on, so shapes are dynamic.
        for stage in model.backbone.stages.values():
            stage.compile(dynamic=True)
        model.head.compile(dynamic=True)
    return model
