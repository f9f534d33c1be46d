"""What a training loop, a config and a figure ask of RSG, declared once: the losses RSG returns and
the setting that weights each in Eq. 7, the terms of L_MV, the statistics it records, and the phase
rule of Algorithm 1. The config's RSG section becomes RSG's arguments through `RSG.arguments_from`
(rsg/module.py), which reads a section with `setting` below.

A "section" is any object with the settings as attributes (the project's `engine.config.RSGConfig`,
a namespace) or a mapping (`{"threshold_epoch": 160, ...}`): rsg/ imports nothing from the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def has_setting(section, key: str) -> bool:
    return key in section if isinstance(section, Mapping) else hasattr(section, key)


def setting(section, key: str):
    """The value of `key` in a config's RSG section (an attribute, or a mapping's entry)."""
    if not has_setting(section, key):
        raise ValueError(f"the RSG settings {type(section).__name__} have no {key!r}")
    return section[key] if isinstance(section, Mapping) else getattr(section, key)


# -- losses (Eq. 7: L = L_cls + lambda1 L_CESC + lambda2 L_MV) ----------------------------------------


@dataclass(frozen=True)
class LossTerm:
    name: str          # its key in the dict of losses RSG returns
    weight_key: str    # the setting that weights it in Eq. 7
    decimals: int      # a log line's precision: L_CESC is in the thousands (docs/CHOICES.md, "Scale of L_CESC")


LOSS_TERMS = (LossTerm("cesc", "cesc_weight", 2),    # L_CESC, Eq. 3 and 5, weight lambda1
              LossTerm("mv", "mv_weight", 3))        # L_MV, Eq. 6, weight lambda2
LOSS_NAMES = tuple(term.name for term in LOSS_TERMS)


def loss_weights(section) -> dict[str, float]:
    """{loss name: its weight in Eq. 7} from a config's RSG section: lambda1 and lambda2."""
    return {term.name: setting(section, term.weight_key) for term in LOSS_TERMS}


# The terms of L_MV (Eq. 6), in the order of RSG's `mv_terms` flags (Table 3 drops one at a time).
MV_TERMS = ("direction", "length", "contrast")


# -- statistics (RSG.diagnostics) ---------------------------------------------------------------------
# What `RSG.diagnostics` may hold after a training forward, in a fixed order (under torchrun every
# rank reduces them in this order, including those that never occurred on it): detached tensors on
# the features' device, computed from tensors the step has anyway.

SCALAR_DIAGNOSTICS = {
    "center_loss": "the center term of L_CESC (Eq. 5)",
    "contrastive_loss": "the contrastive term of L_CESC (Eq. 5), before T_th",
    "contrastive_accuracy": "h's accuracy on its same/different-class pairs, before T_th",
    **{f"mv_{term}": f"the {term} term of L_MV (Eq. 6), from T_th, when kept" for term in MV_TERMS},
    "assignment_entropy": "the mean entropy of gamma (Eq. 1) per sample, in nats",
    "norm_rare": "the mean channel norm per position of the real rare samples the generated ones start from",
    "norm_generated": "the same for the generated samples",
    "norm_fd_rare": "the same for x_fd-rare (Eq. 3)",
    "norm_fd_frequent": "the same for x_fd-freq (Eq. 3)",
    "norm_transformed": "the same for T(x_fd-freq) (Eq. 4)",
    "spread_generated": "the mean distance of the generated samples to their rare sample's center up(C_K) (the "
                        "real rare samples': norm_fd_rare)",
    "cosine_transformed_rare": "the mean cosine between T(x_fd-freq) and x_fd-rare",
}
# Per class, shape (num_classes, num_centers).
CLASS_DIAGNOSTICS = {
    "assignment_mass": "the sum of gamma over the class's samples",
    "assignment_argmax": "how many of the class's samples have each center as their most probable one",
}


# -- phases (Algorithm 1) -----------------------------------------------------------------------------


def generates(epoch: int, threshold_epoch: int) -> bool:
    """Whether RSG generates in `epoch` (0-based): from T_th on. Before T_th the contrastive module h
    trains (L_CESC's second term); from T_th the transformation T trains (L_MV, and L_cls through the
    generated samples) and h is frozen. The centers and their assignment maps train in every epoch."""
    return epoch >= threshold_epoch


def trained_modules(epoch: int, threshold_epoch: int, generation: str) -> frozenset[str]:
    """RSG's submodules that `epoch` trains besides the centers: h before T_th, T from it ("direct"
    generation adds x_fd-freq without T, so then neither)."""
    if not generates(epoch, threshold_epoch):
        return frozenset({"contrastive"})
    return frozenset() if generation == "direct" else frozenset({"transform"})


def generated_before(epoch: int, threshold_epoch: int) -> bool:
    """Whether RSG generated in one of the epochs before `epoch`."""
    return threshold_epoch < epoch


def starts_generating_at(epoch: int, threshold_epoch: int) -> bool:
    """Whether the boundary before `epoch` is where generation begins after epochs without it: the
    last point a run with RSG shares with one without (the checkpoint a branch starts from)."""
    return 0 < threshold_epoch == epoch


# The settings that act only while RSG generates: a run continued before T_th may change them.
GENERATION_SETTINGS = ("threshold_epoch", "transfer_strength", "frequent_ratio", "mv_weight", "mv_terms",
                       "generation")
