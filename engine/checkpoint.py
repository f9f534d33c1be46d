"""Checkpoints: plain dicts written atomically (a temporary file, then `os.replace`).

A checkpoint holds what rebuilds and resumes the run: model, optimizer, the next epoch to run (and
the next step, for a run interrupted mid-epoch), the best metric, the resolved config, the training
class counts (they define the shot groups) and the code version.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from typing import Optional

import torch

from core.errors import UserError
from engine.config import config_from_dict

CHECKPOINT_FORMAT = 1


def code_version() -> str:
    """`git describe` of the repository this file is in, or 'unknown' outside a git checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        return result.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: str) -> str:
    """The file's sha256, read in 1 MiB blocks: how a run records the checkpoint it started from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(state: dict, path: str) -> None:
    """Write `state` to `path` atomically: a crash or a full disk mid-write leaves the previous file
    intact. A failed write is a UserError naming the path (torch reports a full disk as a
    RuntimeError from its zip writer, so both kinds are caught)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        if interrupted(error):     # a Ctrl-C mid-write that torch's zip writer reported as its own error
            raise KeyboardInterrupt from None
        reason = write_failure_reason(error, directory)
        kept = f"the previous {os.path.basename(path)} is intact" if os.path.isfile(path) else "nothing was saved"
        raise UserError(f"cannot write the checkpoint {path}: {reason}; {kept}. Free space (or fix the "
                        f"permissions) and continue with --resume auto, or choose another output_dir") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def interrupted(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies behind `error`: torch.save turns one raised while it writes
    into a RuntimeError of its zip writer ("unexpected pos ...") whose context is the interrupt."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def write_failure_reason(error: BaseException, directory: str) -> str:
    """A short reason for a failed write: the OS's words, or 'no space left' when torch's own
    message hides a full disk."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        stats = os.statvfs(directory)
        if stats.f_bavail * stats.f_frsize < 64 * 2**20:
            return f"{os.strerror(errno.ENOSPC)} (under 64 MiB free)"
    except OSError:
        pass
    return str(error).splitlines()[0][:200]


def load_checkpoint(path: str, mmap: bool = False) -> dict:
    """The checkpoint at `path`, or one UserError naming it. `mmap`: map the tensors instead of
    reading them (a caller that needs only the small entries)."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a checkpoint; give a checkpoint file in it, e.g. "
                        f"{os.path.join(path, 'best.pt')}")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:     # a write cut before its first byte, or a file emptied by hand
        raise UserError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:  # a truncated or foreign file: say which one, its size, torch's first sentence
        reason = (str(error).splitlines() or [""])[0].split(". ")[0].rstrip(".")[:200]
        raise UserError(f"cannot read checkpoint {path} ({os.path.getsize(path)} bytes): {type(error).__name__}: "
                        f"{reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise UserError(f"{path} is not a checkpoint written by this codebase's train.py")
    return state


def stored_config(state: dict, path: str, overrides=None):
    """The config a checkpoint was trained with, `overrides` applied. A key this code does not know (a
    checkpoint of another version) names the file, not just 'checkpoint'."""
    return config_from_dict(state["config"], overrides, source=f"checkpoint {path}")


def load_model_weights(model: torch.nn.Module, weights: dict, path: str, describe: str) -> None:
    """strict=True loading that turns a mismatch into one short message naming both sides."""
    mismatch = describe_mismatch(model.state_dict(), weights)
    if mismatch:
        raise UserError(f"checkpoint {path} does not fit the model built from the config ({describe}): "
                        f"{mismatch}. Evaluate it with the config it was trained with")
    model.load_state_dict(weights, strict=True)


def describe_mismatch(expected: dict, found: dict, shown: int = 3) -> str:
    """'12 missing keys (a, b, c, ...); 1 shape mismatch (head.weight: checkpoint (100, 64), model
    (10, 64))', a few names of each kind, or '' when the state dicts fit."""
    def names(keys):
        keys = sorted(keys)
        return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")

    missing, unexpected = set(expected) - set(found), set(found) - set(expected)
    shapes = [f"{key}: checkpoint {tuple(found[key].shape)}, model {tuple(expected[key].shape)}"
              for key in sorted(set(expected) & set(found))
              if hasattr(found[key], "shape") and tuple(found[key].shape) != tuple(expected[key].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} key(s) of the model missing from the checkpoint ({names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} key(s) of the checkpoint not in the model ({names(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) ({'; '.join(shapes[:shown])}{'; ...' if len(shapes) > shown else ''})")
    return "; ".join(parts)


def find_resume_checkpoint(resume: Optional[str], output_dir: str) -> Optional[str]:
    """`--resume auto`: the run directory's last.pt if there is one; a path: that file."""
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(output_dir, "last.pt")
        return path if os.path.isfile(path) else None
    if os.path.isdir(resume):
        raise UserError(f"--resume: {resume} is a directory, not a checkpoint; give its last.pt, or auto for "
                        f"output_dir's last.pt")
    if not os.path.isfile(resume):
        raise UserError(f"--resume: checkpoint not found: {resume}; give a checkpoint's path, or auto for "
                        f"output_dir's last.pt")
    return resume
