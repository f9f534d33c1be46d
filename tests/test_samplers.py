"""Training samplers: the shuffle and deferred re-sampling (DRS), as pure functions of (seed, epoch),
their config path, and their place in the training loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.class_weights import class_balanced_weights
from core.errors import UserError
from data.samplers import (SAMPLERS, DeferredResampler, EpochShuffleSampler, build_sampler, epoch_indices,
                           resampling_weights)
from engine.config import config_from_dict

# A long-tailed label list: 200, 60, 20, 6 samples, classes interleaved so positions carry no class.
COUNTS = [200, 60, 20, 6]
TARGETS = [int(c) for c in np.random.default_rng(0).permutation(np.repeat(np.arange(4), COUNTS))]


def drs_config(start: int, beta: float = 0.9999):
    return config_from_dict({"data": {"sampler": "drs", "resample_start": start, "resample_beta": beta}})


def drs_sampler(start: int = 3, seed: int = 5, beta: float = 0.9999) -> DeferredResampler:
    return build_sampler(drs_config(start, beta).data, TARGETS, seed)


def epoch_of(sampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


# ---------------------------------------------------------------------------------------------
# The pure function


def test_epoch_indices_is_a_pure_function_of_its_inputs():
    weights = resampling_weights(TARGETS, 0.9999)
    assert torch.equal(epoch_indices(50, 1, 2), epoch_indices(50, 1, 2))
    assert torch.equal(epoch_indices(len(TARGETS), 1, 2, weights), epoch_indices(len(TARGETS), 1, 2, weights))
    assert not torch.equal(epoch_indices(50, 1, 2), epoch_indices(50, 1, 3))
    assert not torch.equal(epoch_indices(50, 1, 2), epoch_indices(50, 2, 2))
    assert sorted(epoch_indices(50, 1, 2).tolist()) == list(range(50))          # a permutation
    drawn = epoch_indices(len(TARGETS), 1, 2, weights)
    assert drawn.dtype == torch.int64 and len(drawn) == len(TARGETS)
    assert len(set(drawn.tolist())) < len(TARGETS)                              # with replacement


def test_epoch_indices_shuffles_before_the_resample_start():
    weights = resampling_weights(TARGETS, 0.9999)
    n = len(TARGETS)
    for epoch in (0, 3):
        assert torch.equal(epoch_indices(n, 1, epoch, weights, resample_start=4), epoch_indices(n, 1, epoch))
    assert torch.equal(epoch_indices(n, 1, 4, weights, resample_start=4), epoch_indices(n, 1, 4, weights))
    assert not torch.equal(epoch_indices(n, 1, 4, weights, resample_start=4), epoch_indices(n, 1, 4))


def test_resampling_weights_are_the_class_balanced_weight_of_each_sample():
    weights = resampling_weights(TARGETS, 0.999)
    per_class = class_balanced_weights(COUNTS, 0.999)
    assert weights.dtype == torch.float64 and weights.shape == (len(TARGETS),)
    np.testing.assert_allclose(weights.numpy(), per_class[TARGETS])


def test_resampling_weights_skip_classes_without_samples():
    # class 1 has no sample: its n_c = 0 would give an infinite weight; it simply never appears
    weights = resampling_weights([0, 0, 0, 2], 0.9)
    np.testing.assert_allclose(weights.numpy(), class_balanced_weights([3, 1], 0.9)[[0, 0, 0, 1]])
    assert torch.isfinite(weights).all()


# ---------------------------------------------------------------------------------------------
# DRS: the shuffle before the start, class-balanced draws from it


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_drs_before_the_start_is_the_epoch_shuffle(epoch):
    shuffle = EpochShuffleSampler(len(TARGETS), seed=5)
    assert epoch_of(drs_sampler(start=3), epoch) == epoch_of(shuffle, epoch)


def test_drs_class_frequencies_match_the_class_balanced_weights():
    # P(class c) = n_c w_c / sum_k n_k w_k; 40 epochs of 286 draws = 11440 draws
    beta = 0.99
    sampler = drs_sampler(start=0, beta=beta)
    drawn = np.concatenate([epoch_of(sampler, epoch) for epoch in range(40)])
    frequencies = np.bincount(np.asarray(TARGETS)[drawn], minlength=4) / len(drawn)
    mass = np.asarray(COUNTS) * class_balanced_weights(COUNTS, beta)
    expected = mass / mass.sum()
    # binomial standard error is at most 0.005 here: 0.015 is 3 of them
    np.testing.assert_allclose(frequencies, expected, atol=0.015)
    # far from the data's own frequencies (0.70 for class 0): the resampling is real
    assert frequencies[0] < 0.5 < np.asarray(COUNTS)[0] / sum(COUNTS)


def test_drs_with_beta_near_one_balances_the_classes():
    # w_c -> 1 / n_c as beta -> 1, so every class is about equally likely
    sampler = drs_sampler(start=0, beta=0.999999)
    drawn = np.concatenate([epoch_of(sampler, epoch) for epoch in range(40)])
    frequencies = np.bincount(np.asarray(TARGETS)[drawn], minlength=4) / len(drawn)
    np.testing.assert_allclose(frequencies, 0.25, atol=0.02)


def test_drs_is_deterministic_per_seed_and_epoch():
    first, second = drs_sampler(start=2, seed=5), drs_sampler(start=2, seed=5)
    for epoch in (0, 2, 7):
        assert epoch_of(first, epoch) == epoch_of(second, epoch)
    assert epoch_of(first, 2) != epoch_of(first, 3)
    assert epoch_of(first, 2) != epoch_of(drs_sampler(start=2, seed=6), 2)
    # revisiting an epoch gives its order again, whatever ran in between
    assert epoch_of(first, 7) == epoch_of(drs_sampler(start=2, seed=5), 7)


def test_drs_draws_len_dataset_indices_and_resumes_mid_epoch():
    sampler = drs_sampler(start=1)
    full = epoch_of(sampler, 4)
    assert len(full) == len(sampler) == len(TARGETS)
    sampler.set_start(100)
    assert len(sampler) == len(TARGETS) - 100 and list(sampler) == full[100:]
    resumed = drs_sampler(start=1)
    resumed.set_epoch(4)
    resumed.set_start(100)
    assert list(resumed) == full[100:]
    sampler.set_epoch(4)                       # a new epoch starts from its beginning again
    assert list(sampler) == full
    with pytest.raises(ValueError):
        sampler.set_start(len(TARGETS) + 1)


def test_drs_switches_on_at_the_start_epoch():
    sampler = drs_sampler(start=3)
    sampler.set_epoch(2)
    assert sorted(sampler) == list(range(len(TARGETS)))        # a permutation: the shuffle
    sampler.set_epoch(3)
    assert sorted(sampler) != list(range(len(TARGETS)))        # draws with replacement


# ---------------------------------------------------------------------------------------------
# Config path and the training loader


def test_sampler_registry_and_config_defaults():
    assert SAMPLERS.names() == ["class_balanced", "drs", "shuffle"]
    cfg = config_from_dict({})
    assert (cfg.data.sampler, cfg.data.resample_start, cfg.data.resample_beta) == ("shuffle", 160, 0.9999)
    shuffle = build_sampler(cfg.data, TARGETS, seed=0)
    assert type(shuffle) is EpochShuffleSampler and len(shuffle) == len(TARGETS)
    drs = build_sampler(drs_config(start=7, beta=0.99).data, TARGETS, seed=0)
    assert isinstance(drs, DeferredResampler) and drs.start_epoch == 7
    np.testing.assert_allclose(drs.sample_weights.numpy(), resampling_weights(TARGETS, 0.99).numpy())


def test_bad_sampler_settings_are_user_errors():
    with pytest.raises(UserError, match="data.sampler.*class_balanced, drs, shuffle"):
        config_from_dict({"data": {"sampler": "balanced"}})
    with pytest.raises(UserError, match="data.resample_beta"):
        config_from_dict({"data": {"resample_beta": 1.0}})


class LabelsOnly(torch.utils.data.Dataset):
    """A dataset whose images cannot be loaded: building the sampler must read `targets` only."""

    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        raise AssertionError("the sampler loaded an image")


def test_build_loaders_uses_the_configured_sampler_without_loading_images():
    from engine.build import build_loaders

    cfg = config_from_dict({"data": {"sampler": "drs", "resample_start": 0, "batch_size": 32, "num_workers": 0}})
    dataset = LabelsOnly(TARGETS)
    train_loader, _, sampler, _ = build_loaders(cfg, dataset, dataset, torch.device("cpu"))
    assert isinstance(sampler, DeferredResampler) and train_loader.sampler is sampler
    assert len(train_loader) == len(TARGETS) // 32
