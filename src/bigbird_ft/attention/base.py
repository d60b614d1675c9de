"""The attention backend interface.

A backend decides how BigBird self-attention is computed. It is attached to a
``transformers.BigBirdModel`` after the model is built or loaded, so every backend reads the
same checkpoint: the q/k/v/o parameter names of ``google/bigbird-roberta-base`` never change.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import BigBirdModel


class AttentionBackend:
    """Base class: by default HF's own attention with ``hf_attention_type``."""

    name: ClassVar[str]
    #: value written to ``BigBirdConfig.attention_type`` before the model is built
    hf_attention_type: ClassVar[str] = "original_full"
    #: False for backends whose backward pass does not exist on CPU
    supports_cpu_training: ClassVar[bool] = True
    #: the BigBird block-sparse pattern: batches are padded to whole blocks, and an export says
    #: ``attention_type=block_sparse`` (HF's own kernel) for it
    sparse: ClassVar[bool] = False

    def __init__(self, block_size: int = 64, num_random_blocks: int = 3, **options: Any) -> None:
        self.block_size = block_size
        self.num_random_blocks = num_random_blocks
        self.options = options

    def attach(self, encoder: BigBirdModel) -> None:
        """Install the backend's modules into ``encoder`` (default: nothing to install)."""

    def encode(
        self, encoder: BigBirdModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the encoder and return the last hidden state ``(batch, seq, hidden)``; ``token_type_ids``:
        question answering's segments (question 0, context 1), else all 0."""
        return encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    def min_sparse_length(self) -> int:
        """Sequences up to this length are too short for the block-sparse pattern (HF's rule)."""
        return (5 + 2 * self.num_random_blocks) * self.block_size
