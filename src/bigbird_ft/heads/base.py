"""The head interface: hidden states (+ mask) -> logits.

Every head ends in the same MLP whose first layers are named as in HF's
``BigBirdClassificationHead`` (``dense``, ``out_proj``), so a ``cls`` head maps one to one onto a
stock ``BigBirdForSequenceClassification`` at export.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers.activations import ACT2FN


class ClassifierMLP(nn.Module):
    """dropout -> [dense -> act -> dropout] x mlp_layers -> out_proj."""

    def __init__(
        self,
        input_size: int,
        num_labels: int,
        mlp_layers: int = 1,
        mlp_hidden_size: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        width = mlp_hidden_size or input_size
        self.dropout = nn.Dropout(dropout)
        self.activation = ACT2FN[activation]
        self.dense = nn.Linear(input_size, width) if mlp_layers >= 1 else None
        self.extra_dense = nn.ModuleList(nn.Linear(width, width) for _ in range(max(mlp_layers - 1, 0)))
        self.out_proj = nn.Linear(width if mlp_layers >= 1 else input_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dropout(pooled)
        if self.dense is not None:
            x = self.dropout(self.activation(self.dense(x)))
        for layer in self.extra_dense:
            x = self.dropout(self.activation(layer(x)))
        return self.out_proj(x)


class Head(nn.Module):
    """Pools the encoder output into one vector per document, then classifies it."""

    name: ClassVar[str]
    #: only the pooler head keeps BigBird's pooler; the others build the encoder without it, so
    #: DDP never sees parameters that get no gradient
    uses_pooler: ClassVar[bool] = False
    #: logits per token (token classification) instead of per document
    per_token: ClassVar[bool] = False
    #: the input is a pair, ``[CLS] question [SEP] context [SEP]`` (head=span; network.py)
    pair_input: ClassVar[bool] = False
    #: built from the encoder's config (``encoder_config=``) rather than the MLP keys
    uses_encoder_config: ClassVar[bool] = False

    def __init__(self, hidden_size: int, num_labels: int, **mlp: Any) -> None:
        """``mlp``: ``ClassifierMLP``'s options (``conf/head/_base.yaml``)."""
        super().__init__()
        self.mlp = ClassifierMLP(hidden_size, num_labels, **mlp)

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler: nn.Module | None) -> torch.Tensor:
        raise NotImplementedError

    def stock_layout(self) -> tuple[str, dict[str, str]] | None:
        """The transformers class this head's layout is, and our parameter names -> its names; None
        when no stock class has this layout (export then writes the encoder plus ``head.pt``)."""
        return None

    def relevance(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Per-token weight of the pooling, where the head has one (evidence.py); None: use gradients."""
        return None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        pooler: nn.Module | None = None,
    ) -> torch.Tensor:
        return self.mlp(self.pool(hidden_states, attention_mask, pooler))
