"""Buffered training (Algorithm 1, line 4): batches with as many safety as helpfulness pairs.

Section 4.2: "we implement buffered training ... where we sample batches of the same size from the safety
dataset and the helpful dataset". :class:`BufferedSampler` produces an index stream in which EVERY
consecutive chunk of ``batch_size`` indices holds ``batch_size // 2`` safety and ``batch_size // 2``
helpfulness indices, shuffled inside the chunk.

Why an index sampler and not a batch sampler: the HF ``Trainer`` builds its ``DataLoader`` with
``batch_size = per_device_train_batch_size`` on top of the sampler, and accelerate's batch-sampler
sharding (``split_batches=False``) hands each rank WHOLE batches of that size from this one stream
(batch k goes to rank k mod world_size). So with ``batch_size = per_device_train_batch_size`` every
micro-batch on every rank is balanced, hence every gradient-accumulation step and every optimizer step
is too. ``__len__`` is a multiple of ``batch_size`` so no partial (unbalanced) batch is ever formed.
"""

from __future__ import annotations

import random
from typing import Iterator, List, Optional, Sequence

from torch.utils.data import Sampler


class _Cycle:
    """An endless stream over ``indices``: each pass is a fresh permutation drawn from ``rng``."""

    def __init__(self, indices: List[int], rng: random.Random):
        self.indices, self.rng, self.order, self.pos = indices, rng, [], 0

    def take(self, n: int) -> List[int]:
        out = []
        while len(out) < n:
            if self.pos == len(self.order):
                self.order = list(self.indices)
                self.rng.shuffle(self.order)
                self.pos = 0
            k = min(n - len(out), len(self.order) - self.pos)
            out.extend(self.order[self.pos : self.pos + k])
            self.pos += k
        return out


class BufferedSampler(Sampler[int]):
    """Dataset indices in balanced chunks of ``batch_size`` (half safety, half helpfulness).

    Args:
        is_safety: per dataset index, whether the pair comes from the safety dataset.
        batch_size: chunk size, even; set it to the per-device batch size.
        seed: base seed; the order is a pure function of ``(seed, epoch)``.
        num_batches: batches per epoch; default ``ceil(max(n_safety, n_helpful) / (batch_size // 2))``,
            i.e. one pass over the larger source while the smaller one cycles (reshuffled each pass).
    """

    def __init__(self, is_safety: Sequence[bool], batch_size: int, seed: int = 0, num_batches: Optional[int] = None):
        if batch_size < 2 or batch_size % 2:
            raise ValueError(
                f"batch_size must be even and >= 2 so a batch splits into equal safety and "
                f"helpfulness halves, got {batch_size}"
            )
        self.safety = [i for i, s in enumerate(is_safety) if s]
        self.helpful = [i for i, s in enumerate(is_safety) if not s]
        empty = [name for name, idx in (("safety", self.safety), ("helpfulness", self.helpful)) if not idx]
        if empty:
            raise ValueError(
                f"buffered sampling needs both safety and helpfulness pairs; the "
                f"{' and '.join(empty)} source is empty ({len(self.safety)} safety, "
                f"{len(self.helpful)} helpfulness)"
            )
        self.batch_size = batch_size
        self.half = batch_size // 2
        if num_batches is None:
            num_batches = -(-max(len(self.safety), len(self.helpful)) // self.half)
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.num_batches = num_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (called by the Trainer / accelerate at each epoch)."""
        self.epoch = int(epoch)

    def batches(self) -> List[List[int]]:
        """This epoch's chunks, each ``batch_size`` indices, half safety and half helpfulness."""
        rng = random.Random(f"bfpo-buffered:{self.seed}:{self.epoch}")
        safety, helpful = _Cycle(self.safety, rng), _Cycle(self.helpful, rng)
        out = []
        for _ in range(self.num_batches):
            chunk = safety.take(self.half) + helpful.take(self.half)
            rng.shuffle(chunk)
            out.append(chunk)
        return out

    def __iter__(self) -> Iterator[int]:
        for chunk in self.batches():
            yield from chunk

    def __len__(self) -> int:
        return self.num_batches * self.batch_size
