"""Learned attention pooling: one query scores every token; padding gets zero weight."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("attention")
class AttentionPoolingHead(Head):
    def __init__(self, hidden_size: int, num_labels: int, **kwargs) -> None:
        super().__init__(hidden_size, num_labels, **kwargs)
        self.scorer = nn.Linear(hidden_size, 1)

    def weights(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = self.scorer(hidden_states).squeeze(-1).float()
        scores = scores.masked_fill(~attention_mask.bool(), float("-inf"))
        return scores.softmax(-1)

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        weights = self.weights(hidden_states, attention_mask).to(hidden_states.dtype)
        return torch.einsum("bn,bnh->bh", weights, hidden_states)

    def relevance(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # the share of the pooled vector each token contributes: what the classifier reads
        return self.weights(hidden_states, attention_mask)
