"""BigBird block-sparse attention through FlexAttention (``torch.nn.attention.flex_attention``).

The BigBird pattern becomes a ``BlockMask`` built directly from block-level index tensors
(``BlockMask.from_kv_blocks``, O(H * nb^2) integers, never an N x N mask) with FlexAttention's
tile size equal to BigBird's block size. HF's softmax counts a key block twice when a random
block repeats a global one (always so in eval mode, where HF's random plan is all zeros); a block
mask cannot list a block twice, so a ``score_mod`` adds log(count) to those scores, which gives
exactly HF's softmax weights. The random plan is the one of ``block_sparse``
(``random_blocks=hf`` reproduces HF's).

Limits (torch 2.13):
* CPU: FlexAttention has a forward but no backward, so this backend serves CPU inference only;
  a CPU training step stops with a UserError. On CPU the flex call runs uncompiled by default
  (torch.compile of flex on CPU needs a C++ toolchain and minutes of compile time on a small
  machine); the uncompiled path materialises the (B, H, N, N) scores, so CPU inference memory is
  O(N^2). Option ``compile: true`` compiles on CPU too.
* GPU: the call is compiled once per shape (dynamo caches one graph per padded length).
* FlexAttention has no attention dropout: attention_probs_dropout_prob is not applied here
  (hidden dropout is). Use block_sparse when attention dropout matters.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import BigBirdConfig, BigBirdModel

from ..errors import UserError
from .block_sparse import BlockSparseSelfAttention, check_random_blocks
from .patched import AttentionContext, PatchedBackend, PatchedSelfAttention
from .plan import block_counts
from .registry import register_backend

log = logging.getLogger(__name__)

_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def _flex_fn(device: torch.device, compile_on_cpu: bool) -> Callable[..., torch.Tensor]:
    """flex_attention, compiled on accelerators (and on CPU if asked); one compiled fn per device type."""
    from torch.nn.attention.flex_attention import flex_attention

    if device.type == "cpu" and not compile_on_cpu:
        return flex_attention
    if device.type not in _COMPILED:
        _COMPILED[device.type] = torch.compile(flex_attention, dynamic=False)
    return _COMPILED[device.type]


class FlexSelfAttention(BlockSparseSelfAttention):
    """Block-sparse pattern of ``BlockSparseSelfAttention`` evaluated by FlexAttention."""

    def __init__(self, *args: Any, compile_on_cpu: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compile_on_cpu = compile_on_cpu
        self._warned_dropout = False

    def _block_mask_parts(
        self, length: int, device: torch.device, ctx: AttentionContext
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block level: counts and log-counts (H, nb, nb), kv_num_blocks (H, nb), kv_indices (H, nb, nb)."""
        num_blocks = length // self.block_size
        index, slot_valid = self.tables(length, device, ctx)
        counts = block_counts(index, slot_valid, num_blocks)
        present = counts > 0
        kv_num = present.sum(-1, dtype=torch.int32)
        # present blocks first, in ascending order
        kv_indices = torch.argsort((~present).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        log_counts = torch.where(present, counts.clamp_min(1.0).log(), torch.zeros_like(counts))
        return counts, log_counts, kv_num, kv_indices

    def attend_sparse(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: AttentionContext,
                      dropout_p: float) -> torch.Tensor:
        from torch.nn.attention.flex_attention import BlockMask

        if dropout_p > 0 and not self._warned_dropout:
            log.warning("attention=flex applies no attention dropout (FlexAttention has none)")
            self._warned_dropout = True
        batch, heads, length, _ = query.shape
        block = self.block_size
        counts, log_counts, kv_num, kv_indices = self._block_mask_parts(length, query.device, ctx)
        key_valid = ctx.key_valid

        def mask_mod(
            b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
        ) -> torch.Tensor:
            present = counts[h, q_idx // block, kv_idx // block] > 0
            return present & key_valid[b, kv_idx] if not ctx.all_valid else present

        def score_mod(
            score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
        ) -> torch.Tensor:
            return score + log_counts[h, q_idx // block, kv_idx // block]

        block_mask = BlockMask.from_kv_blocks(
            kv_num[None].expand(batch, -1, -1),
            kv_indices[None].expand(batch, -1, -1, -1),
            BLOCK_SIZE=block,
            mask_mod=mask_mod,
            seq_lengths=(length, length),
        )
        flex = _flex_fn(query.device, self.compile_on_cpu)
        # flex computes the softmax in fp32 internally for bf16/fp16 inputs
        with warnings.catch_warnings():
            # the uncompiled CPU path is deliberate (see the module docstring)
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex(query, key, value, score_mod=score_mod, block_mask=block_mask)
        if not ctx.all_valid:
            out = out * key_valid[:, None, :, None].to(out.dtype)
        return out


@register_backend("flex")
class FlexAttention(PatchedBackend):
    """Options: ``random_blocks`` (hf | resample), ``seed``, ``compile`` (CPU only; default false)."""

    sparse = True

    supports_cpu_training = False
    module_class = FlexSelfAttention
    known_options: ClassVar[frozenset[str]] = frozenset({"random_blocks", "seed", "compile"})

    def __init__(self, block_size: int = 64, num_random_blocks: int = 3, **options: Any) -> None:
        super().__init__(block_size, num_random_blocks, **options)
        self.random_blocks = check_random_blocks(self.name, options.get("random_blocks", "hf"))
        self.seed = int(options.get("seed", 0))
        self.compile_on_cpu = bool(options.get("compile", False))

    def make_module(self, source: nn.Module, config: BigBirdConfig, layer_idx: int) -> PatchedSelfAttention:
        return FlexSelfAttention(
            source,
            config,
            layer_idx,
            self.block_size,
            self.num_random_blocks,
            self.random_blocks,
            self.seed,
            compile_on_cpu=self.compile_on_cpu,
        )

    def encode(
        self, encoder: BigBirdModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder.training and torch.is_grad_enabled() and input_ids.device.type == "cpu":
            # also for short batches (dense SDPA path): failing at the first long batch, deep
            # into an epoch, would be worse
            raise UserError(
                "attention=flex cannot train on CPU (FlexAttention has no CPU backward pass); "
                "set attention=block_sparse, or trainer=gpu"
            )
        return super().encode(encoder, input_ids, attention_mask, token_type_ids)
