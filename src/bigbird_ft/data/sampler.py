"""Length bucketing: batches of similar lengths, so dynamic padding wastes little.

torch and Lightning have no length-grouped batch sampler (transformers' LengthGroupedSampler is
a per-sample sampler tied to its Trainer), hence this one. Rank-aware: under DDP every rank gets
different batches, the same number of them, and no sample is lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler, Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        bucket_batches: int = 50,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket_size = batch_size * bucket_batches
        self.epoch = 0
        self._num_replicas = num_replicas
        self._rank = rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> LengthBucketBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler``, not on the batch sampler:
        without this every epoch (and every rank's share) would repeat epoch 0's order."""
        return self

    @property
    def num_replicas(self) -> int:
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = order[start : start + self.bucket_size]
            bucket = bucket[np.argsort(-self.lengths[bucket], kind="stable")]
            batches.extend(bucket[i : i + self.batch_size].tolist() for i in range(0, len(bucket), self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        world = self.num_replicas
        if world > 1:
            # repeat batches from the start so each rank gets the same count (none lost)
            total = math.ceil(len(batches) / world) * world
            batches = batches + batches[: total - len(batches)]
            batches = batches[self.rank :: world]
        return iter(batches)

    def __len__(self) -> int:
        n_batches = sum(
            math.ceil(min(self.bucket_size, len(self.lengths) - s) / self.batch_size)
            for s in range(0, len(self.lengths), self.bucket_size)
        )
        return math.ceil(n_batches / self.num_replicas)


def rank_sampler(dataset: Sequence, shuffle: bool, seed: int) -> Sampler[int] | None:
    """This rank's share of ``dataset`` under DDP (None in a single process).

    Training shuffles per epoch (``set_epoch`` is called by Lightning). Evaluation is split without
    repeats, so val/test metrics (synced by torchmetrics) count every sample exactly once; the
    split is only padded when there are fewer samples than ranks (a rank without batches would
    stall the others).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    if shuffle:
        return DistributedSampler(dataset, shuffle=True, seed=seed)
    if len(dataset) < dist.get_world_size():
        return DistributedSampler(dataset, shuffle=False)
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
