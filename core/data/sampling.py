"""Seeded shuffling with one seed per sample: batches that depend on the loader's generator, never on its workers.

A DataLoader seeds its workers from a base seed drawn when they start, so a resumed run (workers started at a
later epoch) augments differently, and the draw moves torch's global generator. Here the main process draws each
epoch the permutation *and one seed per sample* from the sampler's generator (saved in ``last.pt``), and a sample
is augmented under its own seed wherever it is decoded: 0, 1 or 2 workers, interrupted or not, train the same
weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["SeededShuffle", "call_seeded"]

_SEED_RANGE = 2**62  # torch.Generator.manual_seed takes any int in [0, 2**64)


class SeededShuffle(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` in a fresh random order each epoch; both drawn from ``generator`` at ``iter()``."""

    def __init__(self, num_samples: int, generator: torch.Generator) -> None:
        self.num_samples = num_samples
        self.generator = generator  # found by core.train's RNG snapshot (sampler.generator), so resume restores it

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.num_samples, generator=self.generator).tolist()
        seeds = torch.randint(0, _SEED_RANGE, (self.num_samples,), generator=self.generator).tolist()
        return iter(list(zip(order, seeds)))


def call_seeded(fn: Callable[[Any], Any], x: Any, seed: int) -> Any:
    """``fn(x)`` with torch's CPU generator seeded by ``seed``; the caller's generator state is put back.

    torchvision's v2 transforms draw from torch's default CPU generator, so this makes one sample's
    augmentation a function of its seed alone, and leaves the main process's RNG (dropout, init) untouched.
    """
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return fn(x)
    finally:
        generator.set_state(state)
