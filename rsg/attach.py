"""RSG in any network: wrap an unmodified network so RSG transforms one named submodule's output.

    net = torchvision.models.resnet18(num_classes=10)
    model = rsg.attach(net, at="layer3", num_classes=10, frequent_classes=[0, 1],
                       example_input=torch.zeros(1, 3, 64, 64), threshold_epoch=160)
    model.set_epoch(epoch)
    logits, targets, losses = model(images, targets)   # training: + generated samples, their labels
    logits = model(images)                             # anything without targets: exactly net(images)

`at` names a submodule (`net.get_submodule(at)`, dotted names such as "layer3.1" work); RSG
transforms that submodule's OUTPUT, so the rest of the network runs on the enlarged batch. In a
torchvision ResNet, at="layer3" puts RSG between layer3 and layer4, where the paper's large-scale
experiments put it. (The project's own models name the stage whose input RSG transforms; here the
submodule whose output it transforms: attach's "layer3" is rsg.position "layer4" there.)

The hook exists only during a training call with targets: `forward` registers a forward hook on the
submodule, runs the network, and removes the hook. Without targets, or in eval(), the wrapper calls
`net` and nothing else, so evaluation costs what the plain network costs. The network must treat the
batch dimension generically after `at` (torchvision classifiers do); the submodule must run once per
forward and return an (N, C, H, W) tensor.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from rsg.module import RSG


class _TrainingCall:
    """The forward hook of one training call: runs RSG on the submodule's output and keeps the
    enlarged targets and RSG's losses for the wrapper."""

    def __init__(self, rsg: RSG, targets: torch.Tensor, at: str):
        self.rsg = rsg
        self.targets = targets
        self.at = at
        self.losses: Optional[dict] = None

    def __call__(self, module, inputs, output):
        if self.losses is not None:
            raise RuntimeError(f"submodule {self.at!r} ran twice in one forward; RSG can transform only one "
                               f"call per forward: attach it to a submodule that runs once")
        if not torch.is_tensor(output) or output.dim() != 4:
            shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            raise TypeError(f"RSG needs (N, C, H, W) feature maps, but submodule {self.at!r} returned {shape}")
        features, self.targets, self.losses = self.rsg(output, self.targets)
        return features


class RSGAttached(nn.Module):
    """A network with RSG on the output of its submodule `at`. `net` is kept unmodified as `self.net`
    (`model.net.state_dict()` is the deployable network's); RSG's parameters live in `self.rsg`."""

    def __init__(self, net: nn.Module, at: str, rsg: RSG):
        super().__init__()
        submodule(net, at)                          # fail now, not at the first training step
        self.net = net
        self.at = at
        self.rsg = rsg

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch; RSG generates from its threshold_epoch on."""
        self.rsg.set_epoch(epoch)

    def forward(self, images, targets: Optional[torch.Tensor] = None):
        """images -> net(images) without targets; with targets -> (output, targets', losses), where
        in training targets' has the generated samples' labels appended (output has as many rows)."""
        if targets is None:
            return self.net(images)
        if not self.training:
            return self.net(images), targets, dict.fromkeys(self.rsg.loss_names, torch.zeros((), device=targets.device))
        call = _TrainingCall(self.rsg, targets, self.at)
        handle = submodule(self.net, self.at).register_forward_hook(call)
        try:
            output = self.net(images)
        finally:
            handle.remove()
        if call.losses is None:
            raise RuntimeError(f"submodule {self.at!r} did not run in net(images), so RSG was not applied")
        return output, call.targets, call.losses


def submodule(net: nn.Module, at: str) -> nn.Module:
    if not isinstance(at, str) or not at:    # get_submodule("") is net itself: RSG on its logits
        children = ", ".join(name for name, _ in net.named_children())
        raise ValueError(f"at must name a submodule of {type(net).__name__} whose output RSG transforms, e.g. one "
                         f"of {children}; got {at!r}")
    try:
        return net.get_submodule(at)
    except AttributeError:
        children = ", ".join(name for name, _ in net.named_children())
        raise ValueError(f"{at!r} is not a submodule of {type(net).__name__}; its top-level submodules: "
                         f"{children} (dotted names such as 'layer3.1' reach deeper)") from None


@torch.no_grad()
def output_channels(net: nn.Module, at: str, example_input: torch.Tensor) -> int:
    """C of submodule `at`'s output, by one forward of `example_input` in eval mode (so batch-norm
    statistics are not touched); every module's train/eval flag is restored afterwards."""
    shapes = []
    handle = submodule(net, at).register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        net(example_input)
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    if not shapes or len(shapes[0]) != 4:
        raise ValueError(f"submodule {at!r} must return (N, C, H, W) feature maps; got "
                         f"{tuple(shapes[0]) if shapes else 'nothing (it did not run)'}")
    return shapes[0][1]


def attach(net: nn.Module, at: str, num_classes: int, frequent_classes: Sequence[int], *,
           in_channels: Optional[int] = None, example_input: Optional[torch.Tensor] = None,
           **rsg_kwargs) -> RSGAttached:
    """Wrap `net` with RSG on the output of `net.get_submodule(at)`.

    RSG's in_channels is `in_channels` when given, else inferred at attach time by one forward of
    `example_input` (e.g. torch.zeros(1, 3, 224, 224)), so RSG's parameters exist before the
    optimizer is built. `rsg_kwargs` go to `RSG` (num_centers, contrastive_channels,
    transfer_strength, threshold_epoch, variant="paper" | "authors", ...). RSG is placed on the device
    and in the dtype of net's (first floating-point) parameters.
    """
    if in_channels is None:
        if example_input is None:
            raise ValueError(f"attach needs in_channels or example_input (one input batch, e.g. "
                             f"torch.zeros(1, 3, 224, 224)) to know the channels of {at!r}'s output")
        in_channels = output_channels(net, at, example_input)
    rsg = RSG(in_channels, num_classes, frequent_classes, **rsg_kwargs)
    parameter = next((p for p in net.parameters() if p.is_floating_point()), None)
    if parameter is not None:        # a bf16 or float64 network gets a bf16 or float64 RSG
        rsg.to(device=parameter.device, dtype=parameter.dtype)
    return RSGAttached(net, at, rsg)
