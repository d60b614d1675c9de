"""BigBird block-sparse attention without any N x N tensor, forward and backward.

Pattern (ITC): the first and last blocks are global (their queries attend every key, every query
attends their keys), each middle query block attends a 3-block sliding window and r random
blocks: for query block i the key blocks ``[0, i-1, i, i+1, random..., nb-1]``
(``plan.key_block_table``), with a key mask for padding and the two duplicate window slots.

* CPU: ``block_kernel.py``, forward and backward by hand, one (batch, head) pair at a time
  (a torch.library custom op, so ``model.compile=true`` keeps it whole);
* accelerators: the key/value blocks of every middle query block are gathered into
  (B, H*(nb-2), (5+r)*b, D) and one batched SDPA call (fused kernels, dropout included) does the rest.

Both are O(N * (5+r) * b) in time and memory. HF's implementation builds the dense
(B, H, N, N) attention-probability matrix on every call, which is what this backend avoids.

``random_blocks=hf`` reproduces HF's random plan (and its quirks: the all-zeros plan in eval mode,
blocks counted twice when a random block repeats a global one), so outputs equal HF's for the
same weights. ``random_blocks=resample`` draws fresh random blocks from the whole sequence every
training step (as in the paper) from a local generator; eval then uses a fixed plan per length.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BigBirdConfig

from ..errors import UserError
from .block_kernel import block_sparse_core
from .patched import (
    AttentionContext,
    PatchedBackend,
    PatchedSelfAttention,
    dense_attention,
)
from .plan import hf_random_plan, key_block_table, resampled_plan
from .registry import register_backend

RANDOM_BLOCK_MODES = ("hf", "resample")


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    ctx: AttentionContext,
    index: torch.Tensor,
    slot_valid: torch.Tensor,
    block_size: int,
    dropout_p: float,
) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, N, D). ``index``/``slot_valid`` from ``plan.key_block_table``."""
    if query.device.type == "cpu":
        # one (batch, head) pair at a time, forward and backward by hand (block_kernel.py)
        key_valid = None if ctx.all_valid else ctx.key_valid
        return block_sparse_core(query, key, value, index, slot_valid, key_valid, block_size, dropout_p)
    batch, heads, length, dim = query.shape
    num_blocks = length // block_size
    rows = num_blocks - 2
    slots = index.shape[-1]

    # global query blocks 0 and nb-1: dense rows against every key
    global_query = torch.cat([query[:, :, :block_size], query[:, :, -block_size:]], dim=2)
    global_out = dense_attention(global_query, key, value, ctx, dropout_p)

    # accelerators: gather the key/value blocks each middle query block needs and let one fused
    # SDPA call (with dropout) do the rest; index_select's backward is index_add
    flat_index = (index + torch.arange(heads, device=index.device)[:, None, None] * num_blocks).reshape(-1)

    def blocks(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(batch, heads * num_blocks, block_size, dim)

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return blocks(tensor).index_select(1, flat_index).view(batch, heads * rows, slots * block_size, dim)

    middle_query = query[:, :, block_size:-block_size].reshape(batch, heads * rows, block_size, dim)
    slot_mask = slot_valid[:, :, None].expand(rows, slots, block_size)
    if ctx.all_valid:
        mask = slot_mask.expand(heads, -1, -1, -1).reshape(1, heads * rows, 1, slots * block_size)
    else:
        key_blocks = ctx.key_valid.view(batch, num_blocks, block_size)
        mask = key_blocks[:, index] & slot_mask  # (B, H, rows, slots, block)
        mask = mask.view(batch, heads * rows, 1, slots * block_size)
    middle_out = F.scaled_dot_product_attention(
        middle_query, gather(key), gather(value), attn_mask=mask, dropout_p=dropout_p
    )
    middle_out = middle_out.view(batch, heads, rows * block_size, dim)

    out = torch.cat([global_out[:, :, :block_size], middle_out, global_out[:, :, block_size:]], dim=2)
    if not ctx.all_valid:
        # HF zeroes the context of padded queries (its from_mask); keeps padded outputs identical
        out = out.mul_(ctx.key_valid[:, None, :, None].to(out.dtype))
    return out


class BlockSparseSelfAttention(PatchedSelfAttention):
    """Our block-sparse attention; short batches (<= min_sparse_length) run dense SDPA."""

    def __init__(
        self,
        source: nn.Module,
        config: BigBirdConfig,
        layer_idx: int,
        block_size: int,
        num_random_blocks: int,
        random_blocks: str,
        seed: int,
    ) -> None:
        super().__init__(source, config, layer_idx)
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.random_blocks = random_blocks
        self.max_seqlen = int(config.max_position_embeddings)
        self.seed = seed
        self._rng = np.random.default_rng([seed, layer_idx])
        self._tables: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def random_plan(self, length: int, ctx: AttentionContext) -> np.ndarray:
        """(H, nb-2, r) random key blocks for this layer and call (cached per call in ctx)."""
        num_blocks = length // self.block_size
        cache_key = ("plan", self.layer_idx)
        if self.random_blocks == "resample" and self.training:
            if cache_key not in ctx.cache:
                ctx.cache[cache_key] = resampled_plan(
                    self._rng, num_blocks, self.num_random_blocks, self.num_heads
                )
            return ctx.cache[cache_key]
        if self.random_blocks == "resample":
            # eval: one fixed plan per length, independent of how many steps were trained
            fixed = np.random.default_rng([self.seed, self.layer_idx, length])
            return resampled_plan(fixed, num_blocks, self.num_random_blocks, self.num_heads)
        return hf_random_plan(
            length,
            self.block_size,
            self.num_random_blocks,
            self.num_heads,
            self.layer_idx,
            self.max_seqlen,
            self.training,
        )

    def tables(
        self, length: int, device: torch.device, ctx: AttentionContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-block index table for this call; fixed plans are cached per (length, mode, device)."""
        num_blocks = length // self.block_size
        resampling = self.random_blocks == "resample" and self.training
        table_key = (length, self.training, str(device))
        if not resampling and table_key in self._tables:
            return self._tables[table_key]
        if resampling:
            cache_key = ("table", self.layer_idx)
            if cache_key not in ctx.cache:
                ctx.cache[cache_key] = key_block_table(self.random_plan(length, ctx), num_blocks, device)
            return ctx.cache[cache_key]
        # made outside inference mode: a table cached by predict (inference_mode) is then saved for
        # backward by a later gradient pass on the same model (evidence), which inference tensors cannot be
        with nullcontext() if torch.compiler.is_compiling() else torch.inference_mode(False):
            tables = key_block_table(self.random_plan(length, ctx), num_blocks, device)
        self._tables[table_key] = tables
        return tables

    def attend_sparse(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: AttentionContext,
                      dropout_p: float) -> torch.Tensor:
        index, slot_valid = self.tables(query.shape[2], query.device, ctx)
        return block_sparse_attention(query, key, value, ctx, index, slot_valid, self.block_size, dropout_p)


def check_random_blocks(backend: str, mode: Any) -> str:
    if mode not in RANDOM_BLOCK_MODES:
        raise UserError(
            f"attention={backend}: random_blocks={mode!r} is not one of {', '.join(RANDOM_BLOCK_MODES)}; "
            "set attention.random_blocks"
        )
    return str(mode)


@register_backend("block_sparse")
class BlockSparseAttention(PatchedBackend):
    """Options: ``random_blocks`` (hf | resample, default hf), ``seed`` (resample only, default 0)."""

    sparse = True

    module_class = BlockSparseSelfAttention
    known_options: ClassVar[frozenset[str]] = frozenset({"random_blocks", "seed"})

    def __init__(self, block_size: int = 64, num_random_blocks: int = 3, **options: Any) -> None:
        super().__init__(block_size, num_random_blocks, **options)
        self.random_blocks = check_random_blocks(self.name, options.get("random_blocks", "hf"))
        self.seed = int(options.get("seed", 0))

    def make_module(self, source: nn.Module, config: BigBirdConfig, layer_idx: int) -> PatchedSelfAttention:
        if (
            int(config.block_size) != self.block_size
            or int(config.num_random_blocks) != self.num_random_blocks
        ):
            raise UserError(
                f"model config has block_size={config.block_size}, "
                f"num_random_blocks={config.num_random_blocks} but the backend got "
                f"{self.block_size}, {self.num_random_blocks}; set model.block_size and "
                "model.num_random_blocks to match"
            )
        return BlockSparseSelfAttention(
            source, config, layer_idx, self.block_size, self.num_random_blocks, self.random_blocks, self.seed
        )
