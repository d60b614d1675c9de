"""Masked max over tokens: a single decisive token anywhere in a long document survives pooling."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("max")
class MaxHead(Head):
    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        padding = ~attention_mask.bool().unsqueeze(-1)
        return hidden_states.masked_fill(padding, torch.finfo(hidden_states.dtype).min).amax(1)
