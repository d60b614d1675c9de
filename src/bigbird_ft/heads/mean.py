"""Masked mean over tokens: padding never counts, so batch composition cannot change a prediction."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("mean")
class MeanHead(Head):
    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
