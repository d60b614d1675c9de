"""Question answering: a start and an end logit per token.

The layers are transformers' own ``BigBirdForQuestionAnsweringHead`` (dropout, the encoder's
intermediate and output blocks, one linear layer to 2), built from the encoder's config, so the head
exports one to one as a stock ``BigBirdForQuestionAnswering`` (its ``qa_classifier``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import BigBirdConfig
from transformers.models.big_bird.modeling_big_bird import BigBirdForQuestionAnsweringHead

from .base import Head
from .registry import register_head

#: the config keys the stock head reads
HEAD_KEYS = ("hidden_size", "intermediate_size", "hidden_act", "layer_norm_eps", "hidden_dropout_prob")


@register_head("span")
class SpanHead(Head):
    per_token = True
    #: the input is ``[CLS] question [SEP] context [SEP]``: the network gives the encoder segment ids
    #: from the first [SEP] (question 0, context 1), as ``BigBirdForQuestionAnswering`` does
    pair_input: ClassVar[bool] = True
    uses_encoder_config: ClassVar[bool] = True

    def __init__(self, hidden_size: int, num_labels: int, encoder_config: Any = None, **_mlp: Any) -> None:
        nn.Module.__init__(self)
        if encoder_config is None:
            raise ValueError("head=span is built from the encoder's config (build_model hands it over)")
        values = {key: getattr(encoder_config, key) for key in HEAD_KEYS}
        self.qa_classifier = BigBirdForQuestionAnsweringHead(BigBirdConfig(**values, num_labels=num_labels))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                pooler: nn.Module | None = None) -> torch.Tensor:
        return self.qa_classifier(hidden_states)

    def stock_layout(self) -> tuple[str, dict[str, str]] | None:
        return "BigBirdForQuestionAnswering", {name: name for name, _ in self.named_parameters()}
