"""Checkpoints: plain dicts written atomically (a temporary file, then `os.replace`).

A checkpoint holds what rebuilds and resumes the run: model, optimizer, the next epoch to run (and
the next step, for a run interrupted mid-epoch), the best metric, the resolved config, the training
class counts (they define the shot groups) and the code version.
"""

from __future__ import annotations

import os
import subprocess
from typing import Optional

import torch

from engine.errors import UserError

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


def save_checkpoint(state: dict, path: str) -> None:
    """Write `state` to `path` atomically: a crash mid-write leaves the previous file intact."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: say which one
        raise UserError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise UserError(f"{path} is not a checkpoint written by this codebase's train.py")
    return state


def load_model_weights(model: torch.nn.Module, weights: dict, path: str, describe: str) -> None:
    """strict=True loading that turns a mismatch into one message naming both sides."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"checkpoint {path} does not fit the model built from the config ({describe}): "
                        f"{first}. Evaluate it with the config it was trained with") from None


def find_resume_checkpoint(resume: Optional[str], output_dir: str) -> Optional[str]:
    """`--resume auto`: the run directory's last.pt if there is one; a path: that file."""
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(output_dir, "last.pt")
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise UserError(f"--resume: checkpoint not found: {resume}")
    return resume
