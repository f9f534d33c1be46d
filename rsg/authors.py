"""Where the authors' code (Jianf-Wang/RSG, models/RSG.py) departs from the paper, one unit each.

`RSG(..., variant="authors")` switches all of them on; `variant=Departures(mv_rows=True)` one
alone (what the tests do, and what a user does to find which departure moves a number). The
paper's form of each is in rsg/module.py; the list, with the reason for each, is docs/CHOICES.md's
table ("The authors' code as a switch"). Only torch is imported: rsg/ stays a plug-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

VARIANTS = ("paper", "authors")


@dataclass(frozen=True)
class Departures:
    """Which of the authors' departures from the paper are on (all off: the paper)."""

    contrastive_1x1: bool = False      # h: a 1x1 then a 3x3 conv (paper: two 3x3 convs)
    transform_bias: bool = False       # T: a 3x3 conv with a bias (paper: linear, no bias)
    mv_rows: bool = False              # L_MV's cosine and norms over rows of x.view(-1, C), with the constant
    mv_pair: bool = False              # L_MV's contrastive pair [x_freq, T(x_fd-freq)] (paper: [T(x_fd-freq), x_fd-rare])
    swapped_pairing: bool = False      # positional pairing; roles swapped when rare outnumber frequent
    authors_init: bool = False         # assignment map randn with bias 1; kaiming convs, N(0, 1) linear

    @classmethod
    def of(cls, variant) -> "Departures":
        """"paper", "authors" or a Departures -> Departures."""
        if isinstance(variant, Departures):
            return variant
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS} or a Departures, got {variant!r}")
        return cls(**{f.name: variant == "authors" for f in fields(cls)})

    @property
    def name(self) -> str:
        values = {getattr(self, f.name) for f in fields(self)}
        if len(values) == 1:
            return "authors" if values.pop() else "paper"
        return "+".join(f.name for f in fields(self) if getattr(self, f.name))


# -- MV loss over memory rows (the code's compute_mv_loss) -------------------------------------------


def rows(x: torch.Tensor) -> torch.Tensor:
    """(M, C, H, W) -> (M * H * W, C): consecutive runs of C values in NCHW order, as the code's
    `x.view(-1, C)` on a contiguous map. A row is C neighbouring pixels of one channel (when H * W
    >= C), not a pixel's channel vector. reshape keeps this logical order under channels_last too."""
    return x.reshape(-1, x.shape[1])


def mv_direction_rows(transformed: torch.Tensor, fd_rare: torch.Tensor) -> torch.Tensor:
    """The code's direction term: sum of |a * b - 1| over every element of the row-normalised maps,
    per generated sample. Elementwise, not a dot product: each row adds C - cos(row), so a perfect
    alignment leaves (C - 1) * H * W per sample where Eq. 6's per-position form gives 0."""
    a = nn.functional.normalize(rows(fd_rare), dim=1)
    b = nn.functional.normalize(rows(transformed), dim=1)
    return (a * b - 1).abs().sum() / len(transformed)


def mv_length_rows(transformed: torch.Tensor, fd_frequent: torch.Tensor) -> torch.Tensor:
    """The code's length term: | ||row of T(x_fd-freq)|| - ||row of x_fd-freq|| | summed, per sample."""
    return (rows(transformed).norm(dim=1) - rows(fd_frequent).norm(dim=1)).abs().sum() / len(transformed)


# -- pairing (the code's forward) ----------------------------------------------------------------


def pair_like_authors(frequent: torch.Tensor, rare: torch.Tensor, transfer_strength: float):
    """(frequent index (M,), rare index (M,)) as the code pairs them: positionally in the (already
    shuffled) batch, segment by segment.

    s_freq >= s_rare: segment = max(floor(beta s_freq / s_rare), 1) segments of all rare samples, the
    j-th with frequent samples j*s_rare ... (M = segment * s_rare, the paper's s_new).
    s_rare > s_freq, the roles swapped: segment = max(floor(beta s_rare / s_freq), 1) segments of all
    frequent samples, the j-th with rare samples j*s_freq ... (M = segment * s_freq; 3 frequent, 10
    rare, beta 1: 9 samples where the paper's formula makes 10).
    """
    num_frequent, num_rare = len(frequent), len(rare)
    if num_frequent == 0 or num_rare == 0:
        return frequent[:0], rare[:0]
    if num_frequent >= num_rare:
        segments = max(math.floor(transfer_strength * num_frequent / num_rare), 1)
        rare_index = rare.repeat(segments)
    else:
        segments = max(math.floor(transfer_strength * num_rare / num_frequent), 1)
        rare_index = rare[:segments * num_frequent]
    positions = torch.arange(len(rare_index), device=rare.device) % num_frequent
    return frequent[positions], rare_index


# -- initialisation (the code's __init__) -----------------------------------------------------------


@torch.no_grad()
def init_like_authors(rsg: nn.Module) -> None:
    """The code's initial values: the center-assignment map randn with bias 1 (its Parameters are
    left out of its init loop), then every conv kaiming_normal_ with zero bias and every linear
    layer normal_ (std 1) with zero bias. Centers stay zero, as in the paper's module."""
    rsg.assign_weight.normal_()
    rsg.assign_bias.fill_(1.0)
    for module in rsg.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
