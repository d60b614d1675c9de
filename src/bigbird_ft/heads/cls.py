"""First-token ([CLS]) head: HF's BigBirdClassificationHead layout, exportable as a stock model."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("cls")
class CLSHead(Head):
    def pool(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None
    ) -> torch.Tensor:
        return hidden_states[:, 0]
