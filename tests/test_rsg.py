"""RSG against direct computations of Eqs. 1-6 and the gradient routes of Algorithm 1."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsg import RSG, frequent_classes_from_counts, num_generated_per_rare

C, H, W, K = 6, 4, 3, 3
NUM_CLASSES = 5
FREQUENT = [0, 1]


def make_rsg(**overrides):
    torch.manual_seed(0)
    options = dict(num_centers=K, contrastive_channels=8, transfer_strength=1.0, threshold_epoch=2)
    options.update(overrides)
    rsg = RSG(C, NUM_CLASSES, FREQUENT, **options)
    with torch.no_grad():  # centers start at zero in the module; random ones test more
        rsg.centers.normal_()
        rsg.assign_bias.normal_()
    return rsg.train()


def batch(targets, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(targets), C, H, W, generator=generator)
    return x, torch.tensor(targets)


def direct_center_term(rsg, x, targets):
    """Eq. 5, first term, with the (N, K, C, H, W) difference built explicitly."""
    total = 0.0
    for n in range(len(targets)):
        label = targets[n]
        gamma = torch.softmax(x[n].mean(dim=(1, 2)) @ rsg.assign_weight[label] + rsg.assign_bias[label], 0)
        for i in range(K):
            center_map = rsg.centers[label, i][:, None, None].expand(C, H, W)      # up(C_i)
            total = total + gamma[i] * ((x[n] - center_map) ** 2).sum()
    return total / len(targets)


# -- frequent classes and s_new ------------------------------------------------------------------


def test_frequent_classes_are_the_most_populated_with_ties_to_the_lower_index():
    assert frequent_classes_from_counts([5, 50, 7, 50, 50, 1], 0.5) == [1, 3, 4]
    assert frequent_classes_from_counts([10, 20, 20, 5], 0.5) == [1, 2]
    assert frequent_classes_from_counts([3, 9, 9, 9], 0.25) == [1]
    # CIFAR-10-LT with alpha 0.2 (the paper's section 4): classes 0 and 1.
    assert frequent_classes_from_counts([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 0.2) == [0, 1]


@pytest.mark.parametrize("s_freq, s_rare, beta, expected", [
    (8, 4, 1.0, 2),      # floor(8 / 4) = 2 frequent partners per rare sample
    (9, 4, 1.0, 2),      # floor(2.25)
    (3, 5, 1.0, 1),      # fewer frequent than rare: at least 1, frequent samples reused
    (100, 28, 0.01, 1),  # step profile beta: floor(0.036) -> 1
    (100, 2, 0.5, 25),
    (0, 7, 1.0, 0),      # no frequent sample: nothing generated
    (7, 0, 1.0, 0),      # no rare sample: nothing generated
])
def test_generated_per_rare_sample(s_freq, s_rare, beta, expected):
    assert num_generated_per_rare(s_freq, s_rare, beta) == expected


@pytest.mark.parametrize("targets, beta, expected_new", [
    ([0, 0, 1, 1, 0, 1, 2, 3, 4, 2], 1.0, 1 * 4),    # 6 frequent, 4 rare -> floor(1.5) = 1 each
    ([0, 1, 2, 3, 4, 2, 3], 1.0, 1 * 5),             # 2 frequent, 5 rare -> 1 each, reused
    ([0, 0, 0, 0, 0, 0, 0, 0, 2, 3], 1.0, 4 * 2),    # 8 frequent, 2 rare -> 4 each
    ([0, 0, 0, 0, 0, 0, 0, 0, 2, 3], 0.3, 1 * 2),    # floor(0.3 * 8 / 2) = 1
    ([0, 1, 0, 1], 1.0, 0),                          # no rare sample
    ([2, 3, 4, 4], 1.0, 0),                          # no frequent sample
])
def test_forward_appends_s_new_samples_with_rare_targets(targets, beta, expected_new):
    s_rare = sum(t not in FREQUENT for t in targets)
    rsg = make_rsg(transfer_strength=beta)
    rsg.set_epoch(2)
    x, y = batch(targets)
    features, new_targets, losses = rsg(x, y)
    assert features.shape == (len(targets) + expected_new, C, H, W)
    assert torch.equal(features[: len(targets)], x)
    assert torch.equal(new_targets[: len(targets)], y)
    generated_targets = new_targets[len(targets):]
    assert all(int(t) not in FREQUENT for t in generated_targets)
    # Each rare sample of the batch gets the same number of generated samples.
    rare = [t for t in targets if t not in FREQUENT]
    for label in set(rare):
        assert int((generated_targets == label).sum()) == rare.count(label) * (expected_new // max(s_rare, 1))
    if expected_new == 0:
        assert float(losses["mv"].detach()) == 0.0


# -- identity at evaluation ----------------------------------------------------------------------


def test_identity_in_evaluation_and_without_targets():
    rsg = make_rsg()
    rsg.set_epoch(5)
    x, y = batch([0, 2, 1, 3])
    rsg.eval()
    features, targets, losses = rsg(x, y)
    assert features is x and targets is y
    assert float(losses["cesc"]) == 0.0 and float(losses["mv"]) == 0.0
    rsg.train()
    features, targets, losses = rsg(x, None)
    assert features is x and targets is None
    assert float(losses["cesc"]) == 0.0 and float(losses["mv"]) == 0.0


# -- L_CESC (Eq. 5) ------------------------------------------------------------------------------


def test_center_term_equals_eq5_computed_directly():
    rsg = make_rsg()
    x, y = batch([0, 1, 2, 3, 4, 0, 0, 2])
    pooled = x.mean(dim=(2, 3))
    gamma = rsg.center_assignment(pooled, y)
    assert torch.allclose(gamma.sum(dim=1), torch.ones(len(y)))
    ours = rsg.center_loss(x, pooled, y, gamma)
    assert torch.allclose(ours, direct_center_term(rsg, x, y), rtol=1e-5)


def test_cesc_before_threshold_is_center_term_plus_pair_cross_entropy():
    rsg = make_rsg()
    x, y = batch([0, 1, 0, 3, 4, 0, 2, 2, 1])   # odd size: s // 2 = 4 pairs, one sample unused
    torch.manual_seed(123)
    _, _, losses = rsg(x, y)
    torch.manual_seed(123)
    order = torch.randperm(len(y))
    first, second = order[:4], order[4:8]
    logits = rsg.contrastive(x[first], x[second])
    probability_same = torch.softmax(logits, dim=1)[:, 1]                  # gamma*
    same = (y[first] == y[second]).float()
    bce = -(same * probability_same.log() + (1 - same) * (1 - probability_same).log()).mean()
    expected = direct_center_term(rsg, x, y) + bce
    assert torch.allclose(losses["cesc"], expected, rtol=1e-5)
    assert float(losses["mv"]) == 0.0


def test_contrastive_module_is_two_3x3_convs_with_relu_pool_and_linear():
    rsg = make_rsg(contrastive_channels=16)
    convs = [m for m in rsg.contrastive.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(2 * C, 16, (3, 3)), (16, 16, (3, 3))]
    assert any(isinstance(m, nn.ReLU) for m in rsg.contrastive.modules())
    assert rsg.contrastive.linear.out_features == 2


def test_parameter_names_and_shapes():
    rsg = make_rsg()
    assert rsg.centers.shape == (NUM_CLASSES, K, C)
    assert rsg.assign_weight.shape == (NUM_CLASSES, C, K)
    assert rsg.assign_bias.shape == (NUM_CLASSES, K)
    assert rsg.transform.weight.shape == (C, C, 3, 3)
    assert rsg.transform.padding == (1, 1) and rsg.transform.stride == (1, 1)
    assert torch.count_nonzero(RSG(C, NUM_CLASSES, FREQUENT).centers) == 0   # zero-initialised


# -- generation (Eqs. 3-4) and L_MV (Eq. 6) ---------------------------------------------------------


def closest_centers(rsg, x, y):
    gamma = rsg.center_assignment(x.mean(dim=(2, 3)), y)
    return rsg.centers[y, gamma.argmax(dim=1)][:, :, None, None]


def generation_inputs(rsg, targets, seed):
    """Replays the module's random pairing: the same seed gives the same pairs."""
    x, y = batch(targets)
    torch.manual_seed(seed)
    frequent_index, rare_index = rsg.pair_frequent_with_rare(y)
    return x, y, frequent_index, rare_index


def test_generated_samples_follow_eqs_3_and_4():
    rsg = make_rsg()
    rsg.set_epoch(2)
    targets = [0, 2, 0, 1, 3, 0, 1, 4, 0, 1]
    x, y, frequent_index, rare_index = generation_inputs(rsg, targets, seed=7)
    torch.manual_seed(7)
    features, new_targets, _ = rsg(x, y)
    with torch.no_grad():
        fd_frequent = x[frequent_index] - closest_centers(rsg, x, y)[frequent_index]     # Eq. 3
        expected = rsg.transform(fd_frequent) + x[rare_index]                            # Eq. 4
    assert torch.allclose(features[len(y):], expected, atol=1e-6)
    assert torch.equal(new_targets[len(y):], y[rare_index])
    # Pairing: frequent partners are frequent, rare anchors are rare, distinct partners first.
    assert all(int(y[i]) in FREQUENT for i in frequent_index)
    assert all(int(y[i]) not in FREQUENT for i in rare_index)
    assert len(set(frequent_index.tolist())) == min(len(frequent_index), 6)


def test_mv_loss_equals_eq6_computed_position_by_position():
    rsg = make_rsg()
    rsg.set_epoch(3)
    targets = [0, 3, 1, 0, 4, 1, 0, 2]
    x, y, frequent_index, rare_index = generation_inputs(rsg, targets, seed=11)
    torch.manual_seed(11)
    _, _, losses = rsg(x, y)
    centers = closest_centers(rsg, x, y).detach()
    fd_frequent = x[frequent_index] - centers[frequent_index]
    fd_rare = x[rare_index] - centers[rare_index]
    transformed = rsg.transform(fd_frequent)
    direction = length = 0.0
    for m in range(len(rare_index)):
        for j in range(H):
            for k in range(W):
                t, r, f = transformed[m, :, j, k], fd_rare[m, :, j, k], fd_frequent[m, :, j, k]
                direction = direction + abs(torch.dot(t, r) / (t.norm() * r.norm()) - 1)
                length = length + abs(t.norm() - f.norm())
    logits = rsg.contrastive(transformed, fd_rare)
    probability_different = torch.softmax(logits, dim=1)[:, 0]             # gamma* of Eq. 6
    contrast = -probability_different.log().mean()
    expected = direction / len(rare_index) + length / len(rare_index) + contrast
    assert torch.allclose(losses["mv"], expected, rtol=1e-5)


@pytest.mark.parametrize("dropped", [0, 1, 2])
def test_mv_ablation_drops_exactly_one_term(dropped):
    full = make_rsg()
    terms = [True, True, True]
    terms[dropped] = False
    ablated = make_rsg(mv_terms=terms)
    for module in (full, ablated):
        module.set_epoch(2)
    x, y = batch([0, 2, 1, 3, 0, 4])
    torch.manual_seed(5)
    _, _, full_losses = full(x, y)
    torch.manual_seed(5)
    _, _, ablated_losses = ablated(x, y)
    torch.manual_seed(5)
    frequent_index, rare_index = full.pair_frequent_with_rare(y)
    centers = closest_centers(full, x, y).detach()
    fd_frequent, fd_rare = x[frequent_index] - centers[frequent_index], x[rare_index] - centers[rare_index]
    transformed = full.transform(fd_frequent)
    one_term = [
        (F.cosine_similarity(transformed, fd_rare, dim=1) - 1).abs().sum(dim=(1, 2)).mean(),
        (transformed.norm(dim=1) - fd_frequent.norm(dim=1)).abs().sum(dim=(1, 2)).mean(),
        F.cross_entropy(full.contrastive(transformed, fd_rare), torch.zeros(len(rare_index), dtype=torch.long)),
    ][dropped]
    assert torch.allclose(full_losses["mv"] - ablated_losses["mv"], one_term, rtol=1e-4)


def test_direct_addition_adds_the_raw_displacement_and_has_no_mv_loss():
    rsg = make_rsg(generation="direct")
    rsg.set_epoch(2)
    x, y, frequent_index, rare_index = generation_inputs(rsg, [0, 2, 1, 3, 0, 4, 1], seed=3)
    torch.manual_seed(3)
    features, _, losses = rsg(x, y)
    centers = closest_centers(rsg, x, y).detach()
    expected = x[rare_index] + (x[frequent_index] - centers[frequent_index])   # x_rare + x_fd-freq
    assert torch.allclose(features[len(y):], expected, atol=1e-6)
    assert float(losses["mv"]) == 0.0


def test_adding_to_rare_centers_replaces_the_rare_sample_by_its_center():
    rsg = make_rsg(generation="rare_center")
    rsg.set_epoch(2)
    x, y, frequent_index, rare_index = generation_inputs(rsg, [0, 2, 1, 3, 0, 4, 1], seed=3)
    torch.manual_seed(3)
    features, _, _ = rsg(x, y)
    with torch.no_grad():
        centers = closest_centers(rsg, x, y)
        expected = rsg.transform(x[frequent_index] - centers[frequent_index]) + centers[rare_index]
    assert torch.allclose(features[len(y):], expected.expand_as(features[len(y):]), atol=1e-6)


# -- gradient routes (Algorithm 1) ---------------------------------------------------------------


class TinyNet(nn.Module):
    """A conv 'backbone', RSG, then pooling and a linear classifier."""

    def __init__(self, rsg):
        super().__init__()
        self.backbone = nn.Conv2d(3, C, 3, padding=1)
        self.rsg = rsg
        self.classifier = nn.Linear(C, NUM_CLASSES)

    def forward(self, images, targets):
        features, targets, losses = self.rsg(self.backbone(images), targets)
        return self.classifier(features.mean(dim=(2, 3))), targets, losses


def tiny_batch():
    torch.manual_seed(0)
    return torch.randn(10, 3, H, W), torch.tensor([0, 0, 1, 1, 0, 2, 3, 4, 0, 2])


def grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("epoch", [0, 2])
def test_rsg_losses_never_reach_the_backbone(epoch):
    net = TinyNet(make_rsg())
    net.rsg.set_epoch(epoch)
    images, targets = tiny_batch()
    _, _, losses = net(images, targets)
    (losses["cesc"] + losses["mv"]).backward()
    assert all(g is None for g in grads(net.backbone).values())
    assert net.rsg.centers.grad is not None and net.rsg.assign_weight.grad is not None


def test_before_threshold_cesc_trains_centers_assignment_and_contrastive_not_transform():
    net = TinyNet(make_rsg())
    net.rsg.set_epoch(1)
    images, targets = tiny_batch()
    _, _, losses = net(images, targets)
    losses["cesc"].backward()
    rsg_grads = grads(net.rsg)
    for name in ("centers", "assign_weight", "assign_bias", "contrastive.h.0.weight", "contrastive.linear.weight"):
        assert rsg_grads[name] is not None and rsg_grads[name].abs().sum() > 0, name
    assert rsg_grads["transform.weight"] is None


def test_after_threshold_contrastive_is_frozen_and_transform_learns_from_mv_and_cls():
    rsg = make_rsg()
    net = TinyNet(rsg)
    rsg.set_epoch(2)
    images, targets = tiny_batch()

    logits, all_targets, losses = net(images, targets)
    losses["mv"].backward(retain_graph=True)
    assert rsg.transform.weight.grad is not None and rsg.transform.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in rsg.contrastive.parameters())
    assert all(p.grad is None for p in net.backbone.parameters())
    rsg.transform.weight.grad = None

    F.cross_entropy(logits, all_targets).backward()
    assert rsg.transform.weight.grad is not None and rsg.transform.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in rsg.contrastive.parameters())


def test_generated_samples_carry_gradient_only_into_transform():
    rsg = make_rsg()
    rsg.set_epoch(2)
    x, y = batch([0, 2, 1, 3, 0, 4, 1, 0])
    x.requires_grad_(True)
    features, _, _ = rsg(x, y)
    features[len(y):].sum().backward()
    assert x.grad is None or x.grad.abs().sum() == 0
    assert rsg.transform.weight.grad.abs().sum() > 0
    assert rsg.centers.grad is None


@pytest.mark.slow
def test_an_optimizer_step_after_threshold_leaves_the_contrastive_module_unchanged():
    rsg = make_rsg()
    net = TinyNet(rsg)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    images, targets = tiny_batch()
    rsg.set_epoch(0)   # one step before the threshold builds momentum for the contrastive module
    logits, all_targets, losses = net(images, targets)
    (F.cross_entropy(logits, all_targets) + 0.1 * losses["cesc"]).backward()
    optimizer.step()
    before = {k: v.clone() for k, v in rsg.contrastive.state_dict().items()}
    centers_before = rsg.centers.detach().clone()
    rsg.set_epoch(2)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        logits, all_targets, losses = net(images, targets)
        (F.cross_entropy(logits, all_targets) + 0.1 * losses["cesc"] + 0.01 * losses["mv"]).backward()
        optimizer.step()
    for key, value in rsg.contrastive.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(rsg.centers.detach(), centers_before)   # centers keep training


def test_random_pairing_reuses_frequent_samples_cyclically_when_too_few():
    rsg = make_rsg()
    targets = torch.tensor([0, 2, 3, 4, 2, 3, 4])      # 1 frequent, 6 rare
    torch.manual_seed(0)
    frequent_index, rare_index = rsg.pair_frequent_with_rare(targets)
    assert len(rare_index) == 6 and set(frequent_index.tolist()) == {0}
    assert sorted(rare_index.tolist()) == [1, 2, 3, 4, 5, 6]


def trainable(module) -> tuple:
    return tuple(p.requires_grad for p in module.parameters())


def test_each_phase_requires_gradients_only_for_the_parameters_it_trains():
    rsg = make_rsg(threshold_epoch=3)
    before = trainable(rsg)
    assert not rsg.transform.weight.requires_grad
    assert all(p.requires_grad for p in rsg.contrastive.parameters())
    rsg.set_epoch(2)
    assert trainable(rsg) == before
    rsg.set_epoch(3)
    assert rsg.transform.weight.requires_grad
    assert not any(p.requires_grad for p in rsg.contrastive.parameters())
    assert rsg.centers.requires_grad and rsg.assign_weight.requires_grad and rsg.assign_bias.requires_grad
    assert trainable(rsg) != before
    direct = make_rsg(generation="direct", threshold_epoch=0)
    assert not direct.transform.weight.requires_grad


def test_a_batch_without_rare_samples_still_gives_transform_a_zero_gradient():
    """Under DistributedDataParallel every rank must use the same parameters in every step."""
    rsg = make_rsg()
    rsg.set_epoch(2)
    x, y = batch([0, 1, 0, 1])
    _, _, losses = rsg(x, y)
    assert float(losses["mv"].detach()) == 0.0
    losses["mv"].backward()
    assert torch.count_nonzero(rsg.transform.weight.grad) == 0
