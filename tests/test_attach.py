"""rsg.attach: RSG on the output of a named submodule of an unmodified network."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import rsg

SIZE = 32
TARGETS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 5, 7, 9])     # frequent: 0 and 1; rare: the rest


def resnet18_with_rsg(**kwargs):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    options = dict(num_centers=3, contrastive_channels=16, threshold_epoch=2)
    options.update(kwargs)
    model = rsg.attach(net, at="layer3", num_classes=10, frequent_classes=[0, 1],
                       example_input=torch.zeros(1, 3, SIZE, SIZE), **options)
    return net, model


def training_step(model, optimizer, images, targets):
    logits, all_targets, losses = model(images, targets)
    loss = F.cross_entropy(logits, all_targets) + 0.1 * losses["cesc"] + 0.01 * losses["mv"]   # Eq. 7
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return logits, all_targets


def snapshot(module) -> dict:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.slow
def test_attach_trains_a_step_and_evaluates_as_the_plain_network():
    net, model = resnet18_with_rsg()
    assert model.net is net and model.rsg.in_channels == 256           # layer3's output
    assert any(p is model.rsg.transform.weight for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(len(TARGETS), 3, SIZE, SIZE)
    model.train()
    model.set_epoch(2)                                                   # from the threshold on
    before_net, before_rsg = snapshot(model.net), snapshot(model.rsg)
    logits, all_targets = training_step(model, optimizer, images, TARGETS)
    assert len(all_targets) > len(TARGETS) and logits.shape == (len(all_targets), 10)
    assert torch.equal(all_targets[:len(TARGETS)], TARGETS)
    after_net, after_rsg = snapshot(model.net), snapshot(model.rsg)
    assert not torch.equal(before_rsg["transform.weight"], after_rsg["transform.weight"])
    assert not torch.equal(before_net["conv1.weight"], after_net["conv1.weight"])
    assert not torch.equal(before_net["layer4.0.conv1.weight"], after_net["layer4.0.conv1.weight"])
    assert torch.equal(before_rsg["contrastive.linear.weight"], after_rsg["contrastive.linear.weight"])  # frozen
    assert len(net.layer3._forward_hooks) == 0                          # the hook lives only in the call

    model.eval()
    plain = copy.deepcopy(net).eval()                                    # never wrapped
    with torch.no_grad():
        assert torch.equal(model(images), plain(images))
        logits, same_targets, losses = model(images, TARGETS)           # eval with targets: no RSG
    assert torch.equal(logits, plain(images).detach()) and same_targets is TARGETS
    assert float(losses["cesc"]) == 0.0 and float(losses["mv"]) == 0.0


@pytest.mark.slow
def test_before_the_threshold_no_sample_is_generated_and_t_is_untouched():
    _, model = resnet18_with_rsg()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model.set_epoch(0)
    before = snapshot(model.rsg)
    _, all_targets = training_step(model, optimizer, torch.randn(len(TARGETS), 3, SIZE, SIZE), TARGETS)
    assert torch.equal(all_targets, TARGETS)
    after = snapshot(model.rsg)
    assert torch.equal(before["transform.weight"], after["transform.weight"])
    assert not torch.equal(before["assign_weight"], after["assign_weight"])     # L_CESC trains the centers' map


def test_generated_samples_run_through_the_rest_of_the_network():
    net, model = resnet18_with_rsg(threshold_epoch=0)
    seen = {}

    def record(name):
        def hook(module, inputs, output):               # returns None: observes, replaces nothing
            seen[name] = (len(inputs[0]), len(output))
        return hook

    net.layer3.register_forward_hook(record("layer3"))
    net.layer4.register_forward_hook(record("layer4"))
    model.train()
    logits, all_targets, _ = model(torch.randn(len(TARGETS), 3, SIZE, SIZE), TARGETS)
    assert seen["layer3"] == (len(TARGETS), len(TARGETS))        # RSG runs after layer3's own hooks
    assert seen["layer4"] == (len(all_targets), len(all_targets)) and len(all_targets) == len(logits) > len(TARGETS)


@pytest.mark.slow
def test_attach_leaves_batch_norm_statistics_and_modes_alone():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).train()
    net.layer1.eval()                                                     # a user's frozen part
    running_mean = net.bn1.running_mean.clone()
    model = rsg.attach(net, "layer3", 10, [0, 1], example_input=torch.randn(2, 3, SIZE, SIZE))
    assert torch.equal(net.bn1.running_mean, running_mean)
    assert net.training and not net.layer1.training and net.layer2.training


def test_attach_to_a_sequential_with_explicit_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4))
    model = rsg.attach(net, at="2", num_classes=4, frequent_classes=[0], in_channels=12,
                       num_centers=2, contrastive_channels=4, threshold_epoch=0).train()
    logits, targets, losses = model(torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 0, 1, 2, 3]))
    assert len(targets) == len(logits) > 6 and set(losses) == {"cesc", "mv"}
    assert model.rsg.in_channels == 12


@pytest.mark.slow
def test_attach_errors_are_clear():
    net = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ValueError, match="layer9.*layer3"):
        rsg.attach(net, "layer9", 10, [0], in_channels=256)
    with pytest.raises(ValueError, match="example_input"):
        rsg.attach(net, "layer3", 10, [0])
    with pytest.raises(ValueError, match="N, C, H, W"):
        rsg.attach(net, "fc", 10, [0], example_input=torch.zeros(1, 3, SIZE, SIZE))
    branch = rsg.attach(nn.ModuleDict({"used": nn.Identity()}), "used", 10, [0], in_channels=3)
    branch.net.forward = lambda images: images                           # never calls "used"
    with pytest.raises(RuntimeError, match="did not run"):
        branch.train()(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
