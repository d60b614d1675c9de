import numpy as np

from bigbird_ft.data.sampler import LengthBucketBatchSampler


def lengths(n=203, seed=0):
    return np.random.default_rng(seed).integers(10, 4000, size=n).tolist()


def padded_tokens(batches, lens):
    return sum(len(b) * max(lens[i] for i in b) for b in batches)


def test_each_epoch_covers_every_sample_once_and_reshuffles():
    lens = lengths()
    sampler = LengthBucketBatchSampler(lens, batch_size=8, seed=3, bucket_batches=5)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(lens)))
        epochs.append(batches)
    # every pair differs (a chained != would never compare epoch 0 with epoch 2)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_bucketing_pads_far_less_than_random_batches():
    lens = lengths(800)
    sampler = LengthBucketBatchSampler(lens, batch_size=8, seed=0, bucket_batches=50)
    bucketed = padded_tokens(list(sampler), lens)
    order = np.random.default_rng(0).permutation(len(lens)).tolist()
    random_batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    efficiency_bucketed = sum(lens) / bucketed
    efficiency_random = sum(lens) / padded_tokens(random_batches, lens)
    assert efficiency_bucketed > 0.9 > efficiency_random


def test_ranks_get_disjoint_batches_equal_counts_and_nothing_lost():
    lens = lengths(205)
    ranks = [LengthBucketBatchSampler(lens, 8, seed=1, num_replicas=2, rank=r) for r in range(2)]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(len(lens)))
    first = {tuple(b) for b in per_rank[0]}
    second = {tuple(b) for b in per_rank[1]}
    # only the batches repeated to even out the counts may appear on both ranks
    assert len(first & second) <= 1


def test_resumable_loader_continues_with_the_unseen_batches_of_the_saved_epoch():
    from bigbird_ft.data.sampler import ResumableLoader

    lens = list(range(10, 50))
    def loader() -> ResumableLoader:
        return ResumableLoader(list(range(40)), batch_sampler=LengthBucketBatchSampler(lens, 4, seed=5),
                               collate_fn=lambda rows: rows)

    interrupted = loader()
    interrupted.batch_sampler.set_epoch(1)
    epoch_1 = iter(interrupted)
    seen = [next(epoch_1) for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches": 3}

    resumed = loader()
    resumed.load_state_dict(state)
    batches = iter(resumed)  # Lightning builds the iterator first and sets the epoch afterwards
    resumed.batch_sampler.set_epoch(1)
    rest = list(batches)
    assert seen + rest == list(loader_epoch(loader(), 1))
    assert resumed.state_dict() == {"epoch": 1, "batches": 10}

    # a state saved at another epoch (e.g. on the last batch of epoch 1) skips nothing in epoch 2
    later = loader()
    later.load_state_dict(state)
    later.batch_sampler.set_epoch(2)
    assert list(later) == list(loader_epoch(loader(), 2))


def loader_epoch(loader, epoch: int) -> list:
    loader.batch_sampler.set_epoch(epoch)
    return list(loader)
