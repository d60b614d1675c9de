"""Random-block plans of BigBird attention and the per-query-block key lists built from them.

A *plan* is an int array ``(heads, num_blocks - 2, r)``: the random key blocks of query blocks
``1 .. num_blocks - 2`` (the first and last query blocks are global and attend to everything).

``hf_random_plan`` reproduces the plan of HF's ``BigBirdBlockSparseAttention`` draw for draw, so
a model trained with HF's block-sparse attention sees the same pattern here. HF seeds NumPy's
*global* RNG with the layer index on every training forward; here the same algorithm runs on a
local ``np.random.RandomState(layer_idx)``, which yields the same numbers (the global legacy RNG
is a ``RandomState``) without touching global state. In eval mode HF's plan is all zeros (every
random slot points at block 0), and that is reproduced too.
"""

from __future__ import annotations

import numpy as np
import torch

#: HF uses its older plan generator (``_bigbird_block_rand_mask``) for exactly these lengths
HF_LEGACY_PLAN_LENGTHS = (1024, 3072, 4096)


def _legacy_rows(
    rng: np.random.RandomState, seq_len: int, block_size: int, num_rand: int, last_idx: int
) -> np.ndarray:
    """HF's ``_bigbird_block_rand_mask`` (same branches, same order of RNG draws)."""
    num_blocks = seq_len // block_size
    out = np.zeros((num_blocks - 2, num_rand), dtype=np.int32)
    middle = np.arange(1, num_blocks - 1, dtype=np.int32)
    last = num_blocks - 1
    if last_idx > 2 * block_size:
        last = last_idx // block_size - 1
    for row in range(1, num_blocks - 1):
        start, end = row - 2, row
        if row == 1:
            candidates = middle[2:last]
        elif row == 2:
            candidates = middle[3:last]
        elif row in (num_blocks - 3, num_blocks - 2):
            candidates = middle[:last]
        elif start > last:
            candidates = middle[:last]
        elif end + 1 == last:
            candidates = middle[:start]
        else:
            candidates = np.concatenate((middle[:start], middle[end + 1 : last]))
        out[row - 1, :] = rng.permutation(candidates)[:num_rand]
    return out


def _hf_length_plan(seq_len: int, block_size: int, num_rand: int) -> tuple[list[int], list[int]]:
    """HF's ``_get_rand_attn_plan``: where random blocks may come from, per segment."""
    num_blocks = seq_len // block_size
    if 2 * num_rand + 5 < num_blocks:
        return [(2 * num_rand + 5) * block_size, seq_len], [num_rand, 0]
    if num_rand + 5 < num_blocks:
        return [(num_rand + 5) * block_size, seq_len], [num_rand // 2, num_rand - num_rand // 2]
    return [seq_len], [num_rand]


def _row_choice(
    rng: np.random.RandomState, block_id: int, to_start: int, to_end: int, num_rand: int
) -> np.ndarray:
    """HF's ``_get_single_block_row_attention`` with window 1 and one global block per side."""
    perm = rng.permutation(np.arange(to_start, to_end, dtype=np.int32))
    illegal = set(range(block_id - 1, block_id + 2)) | {0, to_end - 1}
    if block_id == 1:
        illegal.add(to_end - 2)
    if block_id == to_end - 2:
        illegal.add(1)
    chosen = [b for b in perm if b not in illegal][:num_rand]
    return np.array(chosen, dtype=np.int32)


def _with_head_rows(
    rng: np.random.RandomState, seq_len: int, block_size: int, num_rand: int, num_heads: int
) -> np.ndarray:
    """HF's ``_bigbird_block_rand_mask_with_head`` (same loops, same order of RNG draws)."""
    from_lengths, plan_rand = _hf_length_plan(seq_len, block_size, num_rand)
    num_blocks = seq_len // block_size
    plan_blocks = [length // block_size for length in from_lengths]
    max_plan_idx = from_lengths.index(seq_len)
    out = np.zeros((num_heads, num_blocks, int(np.sum(plan_rand[: max_plan_idx + 1]))), dtype=np.int32)

    def fill(row: int, lo: int, hi: int, to_start: int, to_end: int, count: int) -> None:
        for head in range(num_heads):
            out[head, row, lo:hi] = _row_choice(rng, row, to_start, to_end, count)

    for plan_idx in range(max_plan_idx + 1):
        rnd_lo = 0
        if plan_idx > 0:
            if plan_rand[plan_idx] > 0:
                rnd_lo = int(np.sum(plan_rand[:plan_idx]))
                rnd_hi = int(np.sum(plan_rand[: plan_idx + 1]))
                for row in range(1, plan_blocks[plan_idx - 1]):
                    fill(
                        row,
                        rnd_lo,
                        rnd_hi,
                        plan_blocks[plan_idx - 1],
                        plan_blocks[plan_idx],
                        plan_rand[plan_idx],
                    )
            for prev in range(plan_idx):
                if plan_rand[prev] == 0:
                    continue
                for row in range(plan_blocks[plan_idx - 1], plan_blocks[plan_idx]):
                    lo = int(np.sum(plan_rand[:prev])) if prev > 0 else 0
                    to_start = plan_blocks[prev - 1] if prev > 0 else 0
                    hi = int(np.sum(plan_rand[: prev + 1]))
                    fill(row, lo, hi, to_start, plan_blocks[prev], plan_rand[prev])
        if plan_rand[plan_idx] == 0:
            continue
        rnd_hi = int(np.sum(plan_rand[: plan_idx + 1]))
        from_start, to_start = 1, 0
        if plan_idx > 0:
            rnd_lo = int(np.sum(plan_rand[:plan_idx]))
            from_start = to_start = plan_blocks[plan_idx - 1]
        for row in range(from_start, plan_blocks[plan_idx]):
            fill(row, rnd_lo, rnd_hi, to_start, plan_blocks[plan_idx], plan_rand[plan_idx])
    return out[:, 1 : num_blocks - 1]


def hf_random_plan(
    seq_len: int,
    block_size: int,
    num_rand: int,
    num_heads: int,
    layer_idx: int,
    max_seqlen: int,
    training: bool,
) -> np.ndarray:
    """The random plan HF's block-sparse attention uses in layer ``layer_idx``: ``(H, nb - 2, r)``."""
    num_blocks = seq_len // block_size
    if not training:
        return np.zeros((num_heads, num_blocks - 2, num_rand), dtype=np.int32)
    rng = np.random.RandomState(layer_idx)
    if seq_len in HF_LEGACY_PLAN_LENGTHS:
        # HF plans over max_position_embeddings with random blocks limited to the first 1024
        # tokens, then keeps the first rows
        rows = [
            _legacy_rows(rng, max_seqlen, block_size, num_rand, last_idx=1024)[: num_blocks - 2]
            for _ in range(num_heads)
        ]
        return np.stack(rows, axis=0)
    return _with_head_rows(rng, seq_len, block_size, num_rand, num_heads)


def resampled_plan(rng: np.random.Generator, num_blocks: int, num_rand: int, num_heads: int) -> np.ndarray:
    """r distinct random blocks per (head, query block) from the whole sequence (the paper's ITC).

    Global blocks and the query block's own window are excluded, so no key block repeats.
    """
    rows = np.arange(1, num_blocks - 1)
    keys = rng.random((num_heads, num_blocks - 2, num_blocks))
    keys[:, :, [0, num_blocks - 1]] = np.inf
    for offset in (-1, 0, 1):
        keys[:, np.arange(num_blocks - 2), rows + offset] = np.inf
    return np.argpartition(keys, num_rand - 1, axis=-1)[..., :num_rand].astype(np.int32)


def key_block_table(
    plan: np.ndarray, num_blocks: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks of query blocks ``1 .. nb - 2``: ``[0, i-1, i, i+1, random..., nb-1]``.

    Returns ``index (H, nb - 2, 5 + r)`` and ``slot_valid (nb - 2, 5 + r)``. Query block 1's
    window block 0 and query block nb-2's window block nb-1 are already among the global blocks;
    those two slots are masked so that, as in HF, only the random slots can repeat a block
    (a repeated block is counted twice in the softmax, exactly like HF's gathered keys).
    """
    num_heads = plan.shape[0]
    rows = torch.arange(1, num_blocks - 1, device=device)
    fixed = torch.stack([torch.zeros_like(rows), rows - 1, rows, rows + 1], dim=-1)
    last = torch.full((num_blocks - 2, 1), num_blocks - 1, device=device)
    rand = torch.as_tensor(plan, dtype=torch.long, device=device)
    index = torch.cat(
        [fixed.expand(num_heads, -1, -1), rand, last.expand(num_heads, -1, -1)], dim=-1
    ).contiguous()
    slot_valid = torch.ones(num_blocks - 2, index.shape[-1], dtype=torch.bool, device=device)
    slot_valid[0, 1] = False
    slot_valid[-1, 3] = False
    return index, slot_valid


def block_counts(index: torch.Tensor, slot_valid: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """How often each key block is attended by each query block: ``(H, nb, nb)`` (block level only).

    The global query rows attend every key block once. Used by FlexAttention, whose block mask
    cannot repeat a block: a count c becomes a score offset of log(c).
    """
    num_heads = index.shape[0]
    counts = torch.zeros(num_heads, num_blocks, num_blocks, dtype=torch.float32, device=index.device)
    counts[:, 0] = 1.0
    counts[:, -1] = 1.0
    weights = slot_valid.to(torch.float32).expand(num_heads, -1, -1)
    counts[:, 1:-1].scatter_add_(-1, index, weights)
    return counts
