"""BigBird's own pooler (dense + tanh on [CLS], pretrained with the encoder), then the MLP."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .base import Head
from .registry import register_head


@register_head("pooler")
class PoolerHead(Head):
    uses_pooler = True

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        if pooler is None:
            raise UserError("head=pooler needs the encoder's pooler, but the encoder was built without it")
        return torch.tanh(pooler(hidden_states[:, 0]))
