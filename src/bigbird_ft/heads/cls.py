"""First-token ([CLS]) head: HF's BigBirdClassificationHead layout, exportable as a stock model."""

from __future__ import annotations

import torch
from torch import nn

from .base import Head
from .registry import register_head


@register_head("cls")
class CLSHead(Head):
    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        return hidden_states[:, 0]

    def stock_layout(self) -> tuple[str, dict[str, str]] | None:
        mlp = self.mlp
        if mlp.dense is None or len(mlp.extra_dense) or mlp.dense.out_features != mlp.dense.in_features:
            return None  # HF's BigBirdClassificationHead: exactly one dense layer of the hidden width
        return "BigBirdForSequenceClassification", {
            f"mlp.{layer}.{kind}": f"classifier.{layer}.{kind}" for layer in ("dense", "out_proj")
            for kind in ("weight", "bias")}
