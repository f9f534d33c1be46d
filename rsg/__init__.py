"""RSG, the rare-class sample generator (CVPR 2021), as a plug-in module.

This package imports nothing from the rest of the repository: copy the folder, or `pip install .`,
and use it in any network.

    from rsg import RSG, frequent_classes_from_counts
    rsg = RSG(in_channels=32, num_classes=10,
              frequent_classes=frequent_classes_from_counts(train_counts, 0.2))
    rsg.set_epoch(epoch)                              # generation from threshold_epoch on
    features, targets, losses = rsg(features, targets)
    loss = cls_loss + 0.1 * losses["cesc"] + 0.01 * losses["mv"]     # Eq. 7

variant="authors" (RSG(...) or attach(...)) runs the authors' code where it departs from the paper;
rsg.authors.Departures switches single departures on (docs/CHOICES.md lists them).

Or, without touching the network's code, RSG on the output of one of its submodules:

    model = rsg.attach(net, at="layer3", num_classes=10, frequent_classes=[0, 1],
                       example_input=torch.zeros(1, 3, 64, 64))
    logits, targets, losses = model(images, targets)  # training; model(images) is net(images)
"""

from rsg.attach import RSGAttached, attach
from rsg.authors import VARIANTS, Departures
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
]
__version__ = "0.1.0"
