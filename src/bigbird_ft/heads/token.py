"""Per-token head (token classification): the MLP on every hidden state, no pooling.

With ``head.mlp_layers=0`` (conf/head/token.yaml) it is dropout + one linear layer, exactly HF's
``BigBirdForTokenClassification`` classifier, and exports as that stock model.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("token")
class TokenHead(Head):
    per_token = True

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        return hidden_states

    def stock_layout(self) -> tuple[str, dict[str, str]] | None:
        if self.mlp.dense is not None:
            return None  # HF's token classifier is dropout + one linear layer: head.mlp_layers=0
        return "BigBirdForTokenClassification", {f"mlp.out_proj.{k}": f"classifier.{k}" for k in ("weight", "bias")}
