"""Shared machinery of our own attention backends (sdpa, block_sparse, flex).

The encoder is built with HF's ``original_full`` attention; ``attach`` swaps each layer's
``attention.self`` for our module, which reuses the existing ``query``/``key``/``value`` linears
(so state-dict keys stay ``encoder.layer.N.attention.self.query.weight`` etc.).

``encode`` calls the encoder with ``attention_mask=None`` (HF then builds no mask at all, let
alone an n x n one) and hands the real padding mask to our modules as an extra keyword argument
that HF forwards unchanged down to ``attention.self``. A keyword argument rather than an attribute
set around the call, because with gradient checkpointing a layer's forward runs again during
backward, after ``encode`` has returned: the recomputation must see the same mask and the same
random plan, and the keyword arguments are what the checkpoint keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BigBirdConfig, BigBirdModel

from ..errors import UserError
from .base import AttentionBackend
from .kernels import dropout_attention, mask_to_bias

#: name of the keyword argument carrying the AttentionContext through HF's modules
CONTEXT_KWARG = "bigbird_ft_attention"


@dataclass
class AttentionContext:
    """Per-call state shared by every layer of one encoder call."""

    #: (batch, seq) bool, True = attend to this key. A row with no token attends to everything
    #: (HF's -10000 penalty gives such a row uniform weights; a True-free row would give NaN).
    key_valid: torch.Tensor
    #: no padding anywhere in the batch: the masks can be dropped (faster kernels)
    all_valid: bool
    #: long enough for the block-sparse pattern
    sparse: bool
    #: per-layer cache (random plans): a checkpointed recomputation finds the same entries
    cache: dict[Any, Any] = field(default_factory=dict)


def dense_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: AttentionContext, dropout_p: float
) -> torch.Tensor:
    """Full attention with a (B, 1, 1, N) key-padding mask, broadcast inside the kernel."""
    mask = None if ctx.all_valid else ctx.key_valid[:, None, None, :]
    if use_own_dropout_kernel(query, dropout_p):
        return dropout_attention(query, key, value, None if mask is None else mask_to_bias(mask), dropout_p)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)


def use_own_dropout_kernel(query: torch.Tensor, dropout_p: float) -> bool:
    """CPU SDPA has no fused kernel with dropout (its math fallback keeps 3 score-sized tensors)."""
    return dropout_p > 0 and query.device.type == "cpu"


class PatchedSelfAttention(nn.Module):
    """Stands in for HF's ``BigBirdSelfAttention`` (original_full call signature)."""

    def __init__(self, source: nn.Module, config: BigBirdConfig, layer_idx: int) -> None:
        super().__init__()
        self.query = source.query
        self.key = source.key
        self.value = source.value
        self.num_heads = int(config.num_attention_heads)
        self.head_dim = int(config.hidden_size) // self.num_heads
        self.dropout_p = float(config.attention_probs_dropout_prob)
        self.layer_idx = layer_idx

    def _heads(self, linear: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden.shape
        return linear(hidden).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if encoder_hidden_states is not None or past_key_values is not None:
            raise ValueError(
                f"{type(self).__name__} is encoder self-attention only (no cross-attention, no cache)"
            )
        query = self._heads(self.query, hidden_states)
        key = self._heads(self.key, hidden_states)
        value = self._heads(self.value, hidden_states)
        dropout_p = self.dropout_p if self.training else 0.0
        ctx: AttentionContext | None = kwargs.get(CONTEXT_KWARG)
        if ctx is None:
            # called as a plain HF model (not through AttentionBackend.encode): use HF's own mask
            mask = attention_mask.to(query.dtype) if attention_mask is not None else None
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
        elif ctx.sparse:
            context = self.attend_sparse(query, key, value, ctx, dropout_p)
        else:  # shorter than the block-sparse pattern, or a dense backend
            context = dense_attention(query, key, value, ctx, dropout_p)
        batch, length, _ = hidden_states.shape
        return context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim), None

    def attend_sparse(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: AttentionContext,
                      dropout_p: float) -> torch.Tensor:
        """(B, H, N, D) inputs -> (B, H, N, D) context of a batch long enough for the block-sparse
        pattern. Default: full attention (a dense backend)."""
        return dense_attention(query, key, value, ctx, dropout_p)


class PatchedBackend(AttentionBackend):
    """A backend whose attention is one of our ``PatchedSelfAttention`` subclasses."""

    hf_attention_type = "original_full"
    module_class: ClassVar[type[PatchedSelfAttention]] = PatchedSelfAttention
    #: option names this backend accepts (besides block_size / num_random_blocks)
    known_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, block_size: int = 64, num_random_blocks: int = 3, **options: Any) -> None:
        unknown = sorted(set(options) - self.known_options)
        if unknown:
            raise UserError(
                f"attention={self.name} has no option {', '.join(unknown)}; "
                f"remove it from conf/attention/{self.name}.yaml"
            )
        super().__init__(block_size, num_random_blocks, **options)

    def make_module(self, source: nn.Module, config: BigBirdConfig, layer_idx: int) -> PatchedSelfAttention:
        return self.module_class(source, config, layer_idx)

    def attach(self, encoder: BigBirdModel) -> None:
        if encoder.attention_type != "original_full":
            # HF's block-sparse modules take other call arguments; switching keeps q/k/v
            encoder.set_attention_type("original_full")
        for layer_idx, layer in enumerate(encoder.encoder.layer):
            layer.attention.self = self.make_module(layer.attention.self, encoder.config, layer_idx)

    def make_context(
        self, encoder: BigBirdModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> AttentionContext:
        valid = attention_mask.to(torch.bool)
        empty = ~valid.any(dim=-1, keepdim=True)
        valid = valid | empty
        return AttentionContext(
            key_valid=valid,
            # a data-dependent branch would break a torch.compile graph: compiled, always mask (same values)
            all_valid=False if torch.compiler.is_compiling() else bool(valid.all()),
            sparse=input_ids.shape[1] > self.min_sparse_length(),
        )

    def encode(
        self, encoder: BigBirdModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not isinstance(encoder.encoder.layer[0].attention.self, self.module_class):
            raise RuntimeError(
                f"attention backend {self.name} is not attached to this encoder (call attach after "
                "building it, and do not call set_attention_type afterwards)"
            )
        ctx = self.make_context(encoder, input_ids, attention_mask)
        # inputs_embeds instead of input_ids: same embeddings, and HF does not warn that the
        # padded input_ids come without an attention_mask (the mask travels in ctx)
        embeds = encoder.get_input_embeddings()(input_ids)
        out = encoder(inputs_embeds=embeds, attention_mask=None, token_type_ids=token_type_ids, **{CONTEXT_KWARG: ctx})
        return out.last_hidden_state
