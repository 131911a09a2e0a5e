"""Length-grouped batches: examples of similar length share a micro-batch, so that little padding is computed.

As transformers' ``LengthGroupedSampler`` does (mega-batches of 50 micro-batches of a shuffled order, sorted by
length), but seeded by (seed, epoch) like the Trainer's own sampler, so that a resumed or multi-process run sees the
same batches as an uninterrupted one; the batches are then shuffled, so that long and short ones alternate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: micro-batches per group sorted by length (transformers uses 50 as well)
GROUP_BATCHES = 50


def length_grouped_order(lengths: Sequence[int], per_batch: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(lengths))`` whose consecutive runs of ``per_batch`` have similar lengths."""
    lengths = np.asarray(lengths)
    shuffled = rng.permutation(len(lengths))
    group = GROUP_BATCHES * per_batch
    order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                            for chunk in np.array_split(shuffled, range(group, len(shuffled), group))])
    batches = [order[start:start + per_batch] for start in range(0, len(order), per_batch)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


class LengthGroupedSampler:
    """Indices in length-grouped order, a fresh order every epoch (the Trainer calls ``set_epoch``)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        yield from length_grouped_order(self.lengths, self.batch_size, np.random.default_rng([self.seed, self.epoch])).tolist()
