"""RSG, the rare-class sample generator (CVPR 2021), as a plug-in module.

This package imports nothing from the rest of the repository: copy the folder, or `pip install .`,
and use it in any network.

    from rsg import RSG, frequent_classes_from_counts
    rsg = RSG(in_channels=32, num_classes=10,
              frequent_classes=frequent_classes_from_counts(train_counts, 0.2))
    rsg.set_epoch(epoch)                              # generation from threshold_epoch on
    features, targets, losses = rsg(features, targets)
    loss = cls_loss + 0.1 * losses["cesc"] + 0.01 * losses["mv"]     # Eq. 7

A config's RSG section (an object with the settings as attributes, or a mapping) gives RSG's
arguments, and the weights of Eq. 7:

    settings = {"frequent_ratio": 0.2, "threshold_epoch": 160, "cesc_weight": 0.1, "mv_weight": 0.01}
    module = RSG(in_channels=32, **RSG.arguments_from(settings, train_counts))
    weights = loss_weights(settings)                  # {"cesc": 0.1, "mv": 0.01}: lambda1, lambda2

variant="authors" (RSG(...) or attach(...)) runs the authors' code where it departs from the paper;
rsg.authors.Departures switches single departures on (docs/CHOICES.md lists them).

Or, without touching the network's code, RSG on the output of one of its submodules:

    model = rsg.attach(net, at="layer3", num_classes=10, frequent_classes=[0, 1],
                       example_input=torch.zeros(1, 3, 64, 64))
    logits, targets, losses = model(images, targets)  # training; model(images) is net(images)
"""

from rsg.attach import RSGAttached, attach
from rsg.authors import VARIANTS, Departures
from rsg.contract import (CLASS_DIAGNOSTICS, GENERATION_SETTINGS, LOSS_NAMES, LOSS_TERMS, MV_TERMS, SCALAR_DIAGNOSTICS,
                          generated_before, generates, loss_weights, starts_generating_at)
from rsg.module import GENERATION_MODES, RSG, ContrastiveModule, frequent_classes_from_counts, num_generated_per_rare

__all__ = [
    "RSG",
    "RSGAttached",
    "attach",
    "ContrastiveModule",
    "Departures",
    "VARIANTS",
    "GENERATION_MODES",
    "frequent_classes_from_counts",
    "num_generated_per_rare",
    "loss_weights",
    "LOSS_NAMES",
    "LOSS_TERMS",
    "MV_TERMS",
    "SCALAR_DIAGNOSTICS",
    "CLASS_DIAGNOSTICS",
    "GENERATION_SETTINGS",
    "generates",
    "generated_before",
    "starts_generating_at",
]
__version__ = "0.1.0"
