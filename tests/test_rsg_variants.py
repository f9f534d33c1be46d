"""RSG's variant switch (paper | authors), each departure alone, and RSG in every precision.

The authors' forward pass is written out below from their code's procedure (Jianf-Wang/RSG,
models/RSG.py: compute_mv_loss and forward), independently of rsg/, and the authors' variant is
held against it on identical weights and inputs. Each departure is also tested alone, with all the
others off, through `rsg.authors.Departures`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rsg import RSG, Departures, attach
from rsg.authors import mv_direction_rows, mv_length_rows, pair_like_authors

C, H, W, K, CLASSES, WIDTH = 4, 5, 5, 3, 4, 6
FREQUENT = [0, 1]


def make_rsg(variant="paper", threshold_epoch=1, dtype=torch.float32, channels=C, centers=K, width=WIDTH,
             **kwargs) -> RSG:
    torch.manual_seed(0)
    rsg = RSG(channels, CLASSES, FREQUENT, num_centers=centers, contrastive_channels=width,
              threshold_epoch=threshold_epoch, variant=variant, **kwargs).to(dtype)
    with torch.no_grad():                     # centers away from zero, so displacements differ per center
        rsg.centers.normal_()
    return rsg.train()


def batch(frequent: int, rare: int, dtype=torch.float32, seed=1, shape=(C, H, W)):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.tensor([0, 1] * (frequent // 2) + [0] * (frequent % 2) + [2, 3] * (rare // 2) + [2] * (rare % 2))
    order = torch.randperm(len(targets), generator=generator)
    x = torch.randn(len(targets), *shape, generator=generator, dtype=torch.float64).to(dtype)
    return x, targets[order]


def only(name: str) -> Departures:
    return Departures(**{name: True})


# -- the switch ---------------------------------------------------------------------------------


def test_variant_names_and_refusal():
    assert Departures.of("paper") == Departures()
    assert all(vars(Departures.of("authors")).values())
    assert make_rsg("authors").departures.name == "authors"
    assert only("mv_rows").name == "mv_rows"
    with pytest.raises(ValueError, match="paper"):
        RSG(C, CLASSES, FREQUENT, variant="code")


def test_attach_passes_the_variant():
    net = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.Conv2d(C, C, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(C, CLASSES))
    model = attach(net, at="0", num_classes=CLASSES, frequent_classes=FREQUENT, in_channels=C, variant="authors")
    assert model.rsg.departures == Departures.of("authors")
    assert model.rsg.transform.bias is not None


# -- the authors' forward, written out from their code ------------------------------------------


def authors_forward(rsg: RSG, x: torch.Tensor, targets: torch.Tensor):
    """Generation phase of the authors' RSG.forward on detached maps: (generated, their targets,
    center term, L_MV), with rsg's parameters in the roles of theirs."""
    num = len(x)
    gamma = torch.softmax(torch.bmm(x.mean(dim=(2, 3)).unsqueeze(1), rsg.assign_weight[targets]).squeeze(1)
                          + rsg.assign_bias[targets], dim=1)
    up = rsg.centers[targets][..., None, None].expand(-1, -1, -1, H, W)             # (N, K, C, H, W)
    center_term = torch.bmm(gamma.unsqueeze(1), (x.unsqueeze(1) - up).pow(2).reshape(num, K, -1)).sum() / num
    head = rsg.is_frequent[targets]
    maps_head, maps_tail, target_head, target_tail = x[head], x[~head], targets[head], targets[~head]
    num_head, num_tail = len(maps_head), len(maps_tail)
    generated, generated_targets, mv_total = [], [], 0.0
    if num_head >= num_tail:
        segments = max(int(num_head * rsg.transfer_strength / num_tail), 1)
        pieces = [(maps_head[j * num_tail:(j + 1) * num_tail], target_head[j * num_tail:(j + 1) * num_tail],
                   maps_tail, target_tail) for j in range(segments)]
    else:
        segments = max(int(num_tail * rsg.transfer_strength / num_head), 1)
        pieces = [(maps_head, target_head, maps_tail[j * num_head:(j + 1) * num_head],
                   target_tail[j * num_head:(j + 1) * num_head]) for j in range(segments)]
    for origin, origin_targets, tail, tail_targets in pieces:
        def closest_center(maps, labels):
            g = torch.softmax(torch.bmm(maps.mean(dim=(2, 3)).unsqueeze(1), rsg.assign_weight[labels]).squeeze(1)
                              + rsg.assign_bias[labels], dim=1).detach()
            return rsg.centers.detach()[labels, g.argmax(dim=1)][..., None, None]
        var_map = origin - closest_center(origin, origin_targets)
        var_map_t = rsg.transform(var_map)
        tail_vector = tail - closest_center(tail, tail_targets)
        weights = {n: p.detach() for n, p in rsg.contrastive.named_parameters()}
        logits = functional_call(rsg.contrastive, weights, (origin, var_map_t))
        a = F.normalize(tail_vector.reshape(-1, C), dim=1)
        b = F.normalize(var_map_t.reshape(-1, C), dim=1)
        length = (var_map_t.reshape(-1, C).norm(dim=1) - var_map.reshape(-1, C).norm(dim=1)).abs().sum()
        mv_total = mv_total + F.cross_entropy(logits, torch.zeros(len(tail), dtype=torch.long)) + \
            (length + (a * b - 1).abs().sum()) / len(tail)
        generated.append(tail + var_map_t)
        generated_targets.append(tail_targets)
    return torch.cat(generated), torch.cat(generated_targets), center_term, mv_total / segments


@pytest.mark.parametrize("frequent, rare", [(10, 3), (3, 10), (6, 6)])
def test_authors_variant_is_the_authors_code(frequent, rare):
    rsg = make_rsg("authors")
    rsg.set_epoch(1)
    x, targets = batch(frequent, rare, torch.float64)
    rsg.double()
    out, out_targets, losses = rsg(x, targets)
    generated, generated_targets, center_term, mv = authors_forward(rsg, x, targets)
    assert torch.equal(out[:len(x)], x) and torch.equal(out_targets[len(x):], generated_targets)
    torch.testing.assert_close(out[len(x):], generated)
    torch.testing.assert_close(losses["cesc"], center_term)
    torch.testing.assert_close(losses["mv"], mv)


def test_paper_variant_is_not_the_authors_code():
    rsg = make_rsg("paper").double()
    rsg.set_epoch(1)
    x, targets = batch(10, 3, torch.float64)
    _, _, losses = rsg(x, targets)
    assert not torch.allclose(losses["mv"], authors_forward(rsg, x, targets)[3])


# -- each departure alone -----------------------------------------------------------------------


def test_contrastive_module_1x1_then_3x3():
    paper, authors = make_rsg().contrastive, make_rsg(only("contrastive_1x1")).contrastive
    assert [m.kernel_size for m in paper.h if isinstance(m, nn.Conv2d)] == [(3, 3), (3, 3)]
    assert [m.kernel_size for m in authors.h if isinstance(m, nn.Conv2d)] == [(1, 1), (3, 3)]
    # the code's nn.Sequential(1x1 conv, ReLU, 3x3 conv, AvgPool2d(H)) + fc, with the same weights
    reference = nn.Sequential(nn.Conv2d(2 * C, WIDTH, 1), nn.ReLU(), nn.Conv2d(WIDTH, WIDTH, 3, padding=1),
                              nn.AvgPool2d(H))
    reference.load_state_dict({k.replace("h.", ""): v for k, v in authors.state_dict().items() if k.startswith("h.")})
    first, second = torch.randn(2, 3, C, H, W)
    expected = authors.linear(reference(torch.cat([first, second], dim=1)).flatten(1))
    torch.testing.assert_close(authors(first, second), expected)


def test_transform_with_a_bias():
    paper, authors = make_rsg(), make_rsg(only("transform_bias"))
    assert paper.transform.bias is None and authors.transform.bias.shape == (C,)
    with torch.no_grad():
        authors.transform.weight.zero_()
        authors.transform.bias.copy_(torch.arange(C, dtype=torch.float32))
    authors.set_epoch(1)
    x, targets = batch(6, 3)
    out, out_targets, _ = authors(x, targets)
    rare_positions = (~authors.is_frequent[targets]).nonzero().squeeze(1)
    # T(anything) = its bias: each generated sample is its rare sample shifted by the bias
    shift = out[len(x):] - x[rare_positions.repeat(2)]
    torch.testing.assert_close(shift, torch.arange(C, dtype=torch.float32)[None, :, None, None].expand_as(shift))
    assert authors.transform.bias.requires_grad
    x_frequent, frequent_targets = x[authors.is_frequent[targets]], targets[authors.is_frequent[targets]]
    _, _, losses = authors(x_frequent, frequent_targets)        # no rare sample: T still gets a zero gradient
    losses["mv"].backward()
    assert authors.transform.bias.grad is not None and torch.all(authors.transform.bias.grad == 0)
    authors.set_epoch(0)
    assert not authors.transform.bias.requires_grad             # T trains only while generating


def test_mv_terms_over_memory_rows_with_their_constant():
    transformed, fd_rare, fd_frequent = torch.randn(3, 2, C, H, W, dtype=torch.float64)
    # perfectly aligned: the paper's direction term is 0, the code's (C - 1) * H * W per sample
    assert float(mv_direction_rows(fd_rare, fd_rare)) == pytest.approx((C - 1) * H * W)
    # written out: rows of x.view(-1, C), elementwise |a * b - 1|, per sample
    a, b = F.normalize(fd_rare.view(-1, C), dim=1), F.normalize(transformed.view(-1, C), dim=1)
    assert float(mv_direction_rows(transformed, fd_rare)) == pytest.approx(float((a * b - 1).abs().sum() / 2))
    rows = (transformed.view(-1, C).norm(dim=1) - fd_frequent.view(-1, C).norm(dim=1)).abs().sum() / 2
    assert float(mv_length_rows(transformed, fd_frequent)) == pytest.approx(float(rows))
    # a row is not a channel vector: the per-position length of a channel-permuted map is unchanged,
    # its row lengths are not
    permuted = fd_frequent[:, torch.tensor([1, 0, 3, 2])]
    assert float(mv_length_rows(permuted, fd_frequent)) > 1e-3
    # ... and through RSG: the departure changes L_MV, not L_CESC
    losses = []
    for variant in (Departures(), only("mv_rows")):
        rsg = make_rsg(variant).double()
        rsg.set_epoch(1)
        torch.manual_seed(3)
        losses.append(rsg(*batch(6, 3, torch.float64))[2])
    assert not torch.allclose(losses[0]["mv"], losses[1]["mv"])
    torch.testing.assert_close(losses[0]["cesc"], losses[1]["cesc"])


def test_mv_contrastive_pair_of_the_code():
    seen = {}
    for variant in (Departures(), only("mv_pair")):
        rsg = make_rsg(variant)
        rsg.set_epoch(1)
        original = rsg.frozen_contrastive
        rsg.frozen_contrastive = lambda first, second: (seen.__setitem__(variant.name, (first, second)),
                                                         original(first, second))[1]
        torch.manual_seed(5)
        x, targets = batch(6, 3)
        out, _, _ = rsg(x, targets)
    x_rare_paper = seen["paper"][1]
    x_frequent, transformed = seen["mv_pair"]
    # the code feeds a real frequent sample and T(x_fd-freq); the paper T(x_fd-freq) and x_fd-rare
    assert any(torch.equal(x_frequent[0], sample) for sample in x)
    assert not any(torch.equal(x_rare_paper[0], sample) for sample in x)
    frequent_samples = x[make_rsg().is_frequent[targets]]
    assert all(any(torch.equal(f, s) for s in frequent_samples) for f in x_frequent)
    assert transformed.shape == x_frequent.shape


@pytest.mark.parametrize("frequent, rare, beta, paper_count, code_count", [
    (3, 10, 1.0, 10, 9),      # docs/CHOICES.md's s_new example: the roles swapped
    (10, 3, 1.0, 9, 9),
    (4, 10, 0.01, 10, 4),     # step recipe (beta 0.01): one segment of all frequent samples
    (10, 4, 0.01, 4, 4),
])
def test_pairing_roles_swapped_when_rare_outnumber_frequent(frequent, rare, beta, paper_count, code_count):
    x, targets = batch(frequent, rare)
    for variant, count in [(Departures(), paper_count), (only("swapped_pairing"), code_count)]:
        rsg = make_rsg(variant, transfer_strength=beta)
        rsg.set_epoch(1)
        frequent_index, rare_index = rsg.pair_frequent_with_rare(targets)
        assert len(frequent_index) == len(rare_index) == count
        out, _, _ = rsg(x, targets)
        assert len(out) == len(x) + count
    # positional, as the code's segments: frequent[j*s_rare + i] with rare[i], or the swap
    f, r = torch.arange(3), torch.arange(3, 13)
    frequent_index, rare_index = pair_like_authors(f, r, 1.0)
    assert frequent_index.tolist() == [0, 1, 2] * 3 and rare_index.tolist() == list(range(3, 12))
    frequent_index, rare_index = pair_like_authors(r, f, 1.0)
    assert frequent_index.tolist() == list(range(3, 12)) and rare_index.tolist() == [0, 1, 2] * 3


def test_center_assignment_initialisation_of_the_code():
    torch.manual_seed(0)
    big = dict(num_centers=15)
    paper = RSG(64, 10, FREQUENT, **big)
    authors = RSG(64, 10, FREQUENT, variant=only("authors_init"), **big)
    assert torch.all(paper.assign_bias == 0) and torch.all(authors.assign_bias == 1)
    assert paper.assign_weight.abs().max() <= 1 / math.sqrt(64)
    weight = authors.assign_weight.detach()
    assert 0.9 < float(weight.std()) < 1.1 and float(weight.abs().max()) > 2
    assert torch.all(authors.centers == 0)
    assert float(authors.contrastive.linear.weight.detach().std()) > 0.5              # N(0, 1), not U(+-1/sqrt(256))
    assert torch.all(authors.contrastive.linear.bias == 0)
    # the other departures leave the init alone
    torch.manual_seed(0)
    assert torch.all(RSG(64, 10, FREQUENT, variant=only("mv_rows"), **big).assign_bias == 0)


# -- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "authors"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_runs_in_float32_and_float64(variant, dtype):
    rsg = make_rsg(variant, dtype=dtype)
    x, targets = batch(6, 3, dtype)
    for epoch in (0, 1):
        rsg.set_epoch(epoch)
        out, _, losses = rsg(x, targets)
        assert out.dtype == dtype and losses["cesc"].dtype == dtype and losses["mv"].dtype == dtype
        (losses["cesc"] + losses["mv"] + out.sum()).backward()


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_center_term_in_float32_under_autocast(amp):
    rsg = make_rsg()
    x, targets = batch(6, 3)
    with torch.autocast("cpu", dtype=amp):
        features = nn.functional.conv2d(x, torch.eye(C)[:, :, None, None])   # autocast output: half precision
        assert features.dtype == amp
        out, _, losses = rsg(features, targets)
    assert losses["cesc"].dtype == torch.promote_types(amp, torch.float32) == torch.float32
    assert out.dtype == amp


GRADCHECK_SIZE = dict(channels=3, centers=2, width=3)      # on 3 x 3 maps: seconds, not minutes


def _gradcheck(rsg: RSG, epoch: int, names: list[str], outputs):
    """gradcheck of outputs(features', losses) wrt rsg's parameters `names`, in float64, with the
    random pairing fixed (each call reseeds)."""
    rsg.set_epoch(epoch)
    x, targets = batch(6, 3, torch.float64, shape=(rsg.in_channels, 3, 3))
    params = {n: p.detach().clone().requires_grad_(True) for n, p in rsg.named_parameters() if n in names}
    assert set(params) == set(names)
    fixed = {n: p.detach() for n, p in rsg.named_parameters() if n not in names}

    def function(*values):
        torch.manual_seed(0)
        out, _, losses = functional_call(rsg, {**fixed, **dict(zip(params, values))}, (x, targets))
        return outputs(out[len(x):], losses)

    assert torch.autograd.gradcheck(function, tuple(params.values()), eps=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_gradcheck_before_the_threshold(variant):
    """L_CESC (center term + contrastive cross-entropy) wrt the centers, the assignment map and h."""
    rsg = make_rsg(variant, dtype=torch.float64, **GRADCHECK_SIZE)
    names = ["centers", "assign_weight", "assign_bias"] + [f"contrastive.{n}" for n, _ in rsg.contrastive.named_parameters()]
    _gradcheck(rsg, 0, names, lambda generated, losses: losses["cesc"])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_gradcheck_after_the_threshold(variant):
    """From T_th: L_CESC wrt the centers and the assignment map; L_MV and the generated samples wrt
    T (weight, and bias in the authors' variant), through the frozen contrastive module."""
    rsg = make_rsg(variant, dtype=torch.float64, **GRADCHECK_SIZE)
    _gradcheck(rsg, 1, ["centers", "assign_weight", "assign_bias"], lambda generated, losses: losses["cesc"])
    transform = [f"transform.{n}" for n, _ in rsg.transform.named_parameters()]
    assert len(transform) == (2 if variant == "authors" else 1)
    _gradcheck(rsg, 1, transform, lambda generated, losses: (losses["mv"], generated))
