"""The seed of every random stream of an epoch, from (seed, epoch, stream): one function.

A pure function, so a run resumed at an epoch boundary draws exactly what the uninterrupted run
drew. The values are the ones this code has always drawn (the sampler's order and the global RNGs
had two formulas before they met here), so every run and figure measured before, the quick
start's included, repeats; a change of these numbers changes every trajectory.
Known and left: under torchrun, rank r of epoch e seeds its global RNGs (augmentation, RSG's
pairings) like rank 0 of epoch e + r; the ranks' streams within an epoch are distinct.
"""

# The sampler's order (data/samplers.py); rank r's global RNGs are stream r.
SAMPLER_STREAM = -1
SEED_STRIDE = 1_000_003          # rank streams: more epochs than any run has, per seed
SAMPLER_SEED_STRIDE = 100_003    # the sampler's order: likewise


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The generator seed of `stream` (a rank, or SAMPLER_STREAM) in `epoch` of a run seeded `seed`."""
    if stream == SAMPLER_STREAM:
        return seed * SAMPLER_SEED_STRIDE + epoch
    if stream < 0:
        raise ValueError(f"stream {stream} is neither a rank (>= 0) nor SAMPLER_STREAM")
    return seed * SEED_STRIDE + epoch + 1 + stream
