"""The one seed formula: every random stream of an epoch is seeded from (seed, epoch, stream).

A pure function, so a run resumed at an epoch boundary draws exactly what the uninterrupted run drew,
and the streams (the global RNGs of each rank, the sampler's order) never share a generator seed.
"""

# The sampler's order uses stream SAMPLER_STREAM; rank r's global RNGs (augmentation, RSG's draws)
# use stream r, so they are distinct from each other and from the order for up to 2**16 - 1 ranks.
SAMPLER_STREAM = 2 ** 16 - 1
EPOCH_STRIDE = 2 ** 16
SEED_STRIDE = 1_000_003   # more epochs than any run has, so (seed, epoch) pairs never collide


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The generator seed of `stream` in `epoch` of a run seeded `seed`."""
    if not 0 <= stream <= SAMPLER_STREAM:
        raise ValueError(f"stream {stream} is outside 0..{SAMPLER_STREAM}")
    return (seed * SEED_STRIDE + epoch + 1) * EPOCH_STRIDE + stream
