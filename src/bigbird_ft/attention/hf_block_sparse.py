"""HF's block-sparse attention, with per-batch routing of short batches.

HF's ``BigBirdModel.forward`` switches the whole model to ``original_full`` for good the first
time it meets a sequence of at most (5 + 2r) * block tokens (transformers issue 20031), so one
short validation batch silently turns every later step into O(n^2) attention. Here a short batch
runs full attention for that call only; the model is switched back before the next one.
"""

from __future__ import annotations

import torch
from transformers import BigBirdModel

from .base import AttentionBackend
from .registry import register_backend


@register_backend("hf_block_sparse")
class HFBlockSparseAttention(AttentionBackend):
    hf_attention_type = "block_sparse"
    sparse = True

    def encode(
        self, encoder: BigBirdModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids.shape[1] > self.min_sparse_length():
            if encoder.attention_type != "block_sparse":
                encoder.set_attention_type("block_sparse")
            return encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        encoder.set_attention_type("original_full")
        try:
            return encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        finally:
            encoder.set_attention_type("block_sparse")
