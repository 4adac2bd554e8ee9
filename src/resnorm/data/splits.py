"""Seeded, deterministic index arithmetic: train/validation splits and per-epoch orders.

Everything here is a pure function of its integer arguments (a fresh ``torch.Generator`` each call),
so a resumed run, or another process of a distributed run, reproduces exactly the same indices.
"""

from __future__ import annotations

import torch

# Odd constants that spread (seed, counter) pairs over generator seeds; any fixed values would do.
_SEED_STRIDE = 1_000_003
_STREAM_STRIDE = 7_919


def generator_for(seed: int, counter: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, counter, stream)``, the same on every machine and process."""
    g = torch.Generator()
    g.manual_seed((seed * _SEED_STRIDE + counter * _STREAM_STRIDE + stream) % (2**63 - 1))
    return g


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted (train, val) index tensors; ``round(n * val_fraction)`` go to val.

    The split depends only on ``(n, val_fraction, seed)``.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    perm = torch.randperm(n, generator=generator_for(seed, stream=1))
    val = perm[:n_val].sort().values
    train = perm[n_val:].sort().values
    return train, val


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``range(n)`` for one epoch (a new permutation every epoch)."""
    return torch.randperm(n, generator=generator_for(seed, counter=epoch, stream=2))


class EpochBatches:
    """Batch ``step`` (0-based) of a shuffled, drop-last pass over ``n`` items, as a pure function of step.

    ``steps_per_epoch = n // batch_size``; batch ``s`` is slice ``s % steps_per_epoch`` of epoch
    ``s // steps_per_epoch``'s permutation. Only the current epoch's permutation is cached.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if n < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} examples)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_order(self.n, self.seed, epoch)
            self._epoch = epoch
        start = position * self.batch_size
        return self._order[start : start + self.batch_size]
