"""Evaluation-time corrections over a grid of tau (`eval.posthoc`, `eval.taus`; docs/CHOICES.md,
"Today's baselines and the decoupled classifier stage").

    logit_adjust   z_c - tau * log(pi_c), pi the training class frequency (Menon et al. 2021, Eq. 9)
    tau_norm       x . w_c / ||w_c||^tau, without the bias (Kang et al. 2020, section 4): from the
                   logits, (z_c - b_c) / ||w_c||^tau, the same numbers without a second forward pass

Both are functions of the logits, so one forward pass serves the whole grid. tau = 0 is the plain
model for logit_adjust, and the bias-free linear classifier for tau_norm. Where the dataset has a
validation split, tau is chosen on it (highest top-1, the smallest tau among ties); without one,
`eval.tau` is the reported value and every tau of the grid is logged beside it. Choosing on the test
split would report the best of 21 test numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from core.errors import UserError
from engine.metrics import SHOT_GROUPS, accuracy_report
from losses.logit_adjusted import log_prior


def posthoc_kind(cfg) -> str:
    """The correction the config asks for: stage tau_norm implies tau_norm."""
    return "tau_norm" if cfg.stage.name == "tau_norm" else cfg.eval.posthoc


@dataclass
class Correction:
    """The numbers one correction needs, taken from the training counts and the model."""
    kind: str
    taus: tuple
    log_prior: Optional[torch.Tensor] = None     # (C,), logit_adjust
    bias: Optional[torch.Tensor] = None          # (C,), tau_norm (zeros for a head without bias)
    norms: Optional[torch.Tensor] = None         # (C,) ||w_c||, tau_norm
    logit_scale: float = 1.0                     # cosine heads: the loss's s (the softmax saw s * cos)

    def apply(self, logits: torch.Tensor, tau: float) -> torch.Tensor:
        """logits (N, C) -> corrected logits (N, C)."""
        if self.kind == "logit_adjust":
            return self.logit_scale * logits - tau * self.log_prior
        return (logits - self.bias) / self.norms.pow(tau)


def linear_head(model) -> nn.Linear:
    head = model.head
    if not isinstance(head, nn.Linear):
        raise UserError(f"eval.posthoc=tau_norm needs a linear classifier (w_c . x + b_c); this model's is "
                        f"{type(head).__name__} (a cosine head's weights are normalised already, an LWS head "
                        f"has learned its scales); use eval.posthoc=logit_adjust or none")
    return head


def build_correction(cfg, model, train_counts) -> Optional[Correction]:
    """None when eval.posthoc is none (and the stage is not tau_norm)."""
    kind = posthoc_kind(cfg)
    taus = tuple(cfg.eval.taus)
    if kind == "none":
        return None
    if kind == "logit_adjust":
        if min(train_counts) <= 0:
            raise UserError("eval.posthoc=logit_adjust needs every class in the training set (log of its prior)")
        # A cosine head outputs cos theta in [-1, 1]; its loss (LDAM, AM) trained s * cos, so the
        # prior is subtracted from s * cos, the logits whose softmax estimates p(y | x).
        scale = cfg.loss.scale if cfg.head_kind == "cosine" else 1.0
        return Correction(kind, taus, log_prior=log_prior(train_counts), logit_scale=scale)
    head = linear_head(model)
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu() if head.bias is not None else torch.zeros(weight.shape[0])
    return Correction(kind, taus, bias=bias, norms=weight.norm(dim=1).clamp_min(1e-12))


def grid_reports(correction: Correction, logits: torch.Tensor, targets: np.ndarray, train_counts) -> dict:
    """{tau: accuracy report} for every tau of the grid."""
    return {tau: accuracy_report(correction.apply(logits, tau).argmax(dim=1).numpy(), targets, train_counts)
            for tau in correction.taus}


def best_tau(reports: dict) -> float:
    """Highest top-1; among equal ones the first of the grid (the smallest correction in a 0.. grid)."""
    return max(reports, key=lambda tau: (reports[tau]["top1"], -list(reports).index(tau)))


def summary(reports: dict) -> dict:
    """{tau as text: top1 / many / medium / few}: what metrics.jsonl and the JSON keep per tau."""
    return {f"{tau:g}": {k: reports[tau][k] for k in ("top1",) + SHOT_GROUPS} for tau in reports}


def corrected_report(correction: Correction, logits: torch.Tensor, targets: np.ndarray, train_counts, split: str,
                     chosen_tau: Optional[float] = None, fixed_tau: float = 1.0) -> dict:
    """The accuracy report at the chosen tau, plus `posthoc`: the kind, the tau, how it was chosen,
    every tau; and `by_tau_reports`, every tau's whole report. A function of the logits of one
    forward pass (engine/evaluation.py makes it), so the grid costs no second pass.

    chosen_tau given: use it (chosen on the val split before); else on `split` == val: the best of
    the grid; else `fixed_tau` (eval.tau)."""
    reports = grid_reports(correction, logits, targets, train_counts)
    if chosen_tau is not None:
        tau, how = chosen_tau, "on the val split"
    elif split == "val":
        tau, how = best_tau(reports), "on the val split"
    else:
        tau, how = fixed_tau, "fixed (eval.tau; no val split)"
    report = dict(reports[tau])
    report["posthoc"] = {"kind": correction.kind, "tau": tau, "chosen": how, "split": split,
                         "by_tau": summary(reports)}
    report["by_tau_reports"] = reports
    return report


def format_tau_table(posthoc: dict, title: str) -> str:
    """One line per tau: Many | Medium | Few | All, the reported tau marked."""
    def cell(value):
        return f"{value:6.2f}" if value is not None else "     -"

    lines = [title, f"{posthoc['kind']}, tau chosen {posthoc['chosen']}: {posthoc['tau']:g}",
             "   tau    Many  Medium     Few     All"]
    for tau, r in posthoc["by_tau"].items():
        mark = "  <-" if float(tau) == posthoc["tau"] else ""
        lines.append(f"{float(tau):6.2f}  {cell(r['many'])}  {cell(r['medium'])}  {cell(r['few'])}  {cell(r['top1'])}{mark}")
    return "\n".join(lines)
