"""Length bucketing: batches of similar lengths, so dynamic padding wastes little.

torch and Lightning have no length-grouped batch sampler (transformers' LengthGroupedSampler is
a per-sample sampler tied to its Trainer), hence this one. Rank-aware: under DDP every rank gets
different batches, the same number of them, and no sample is lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler, Sampler


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
        #: batches of the current epoch to skip once (set by ResumableLoader on a mid-epoch resume)
        self.start = 0

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
        # a generator: the order is drawn at the first batch, after Lightning's set_epoch (it
        # creates the iterator before calling set_epoch when it resumes mid-epoch)
        batches = self._all_batches()
        world = self.num_replicas
        if world > 1:
            # repeat batches from the start so each rank gets the same count (none lost)
            total = math.ceil(len(batches) / world) * world
            batches = batches + batches[: total - len(batches)]
            batches = batches[self.rank :: world]
        start, self.start = self.start, 0
        yield from batches[start:]

    def __len__(self) -> int:
        n_batches = sum(
            math.ceil(min(self.bucket_size, len(self.lengths) - s) / self.batch_size)
            for s in range(0, len(self.lengths), self.bucket_size)
        )
        return math.ceil(n_batches / self.num_replicas)


class ResumableLoader(DataLoader):
    """A length-bucketed training loader that knows where it is in the epoch.

    Lightning saves ``state_dict()`` of a loader that has one in the checkpoint and hands it back on
    resume; without it a run resumed mid-epoch replays the epoch's first batches instead of the
    unseen ones (and warns). torch's DataLoader has no such state, torchdata's
    StatefulDataLoader would add a dependency for two counters.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0
        self._resume_at: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        sampler: LengthBucketBatchSampler = self.batch_sampler  # type: ignore[assignment]
        resume, self._resume_at = self._resume_at, None
        if resume is not None and resume["epoch"] == sampler.epoch:
            sampler.start = resume["batches"]
        self._consumed = sampler.start
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches": self._consumed}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, int]) -> None:
        # applied at the next epoch start, once Lightning has set the epoch (a checkpoint saved on
        # an epoch's last batch resumes at the next epoch, where nothing is skipped)
        self._resume_at = dict(state)


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
