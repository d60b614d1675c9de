"""The network alone: BigBird encoder + attention backend + head, built from the config by one factory.

It knows nothing of losses, metrics or optimizers (the task and the LightningModule own those), so
export, predict, the benches and the tests use the same object training uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..attention import build_backend
from ..attention.base import AttentionBackend
from ..heads import build_head, head_class
from .encoder import build_encoder


class LongDocumentClassifier(nn.Module):
    """``(input_ids, attention_mask) -> logits``; the backend decides how attention is computed."""

    def __init__(self, encoder: nn.Module, backend: AttentionBackend, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.backend = backend
        self.head = head
        backend.attach(encoder)
        # logits are divided by it: 1 while training, fitted on validation after (calibration.py)
        self.register_buffer("temperature", torch.tensor(1.0))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask)
        return self.head(hidden, attention_mask, getattr(self.encoder, "pooler", None)) / self.temperature


def build_model(
    model: Mapping[str, Any],
    attention: Mapping[str, Any],
    head: Mapping[str, Any],
    encoder_config: Mapping[str, Any],
    num_labels: int,
    init_weights_from: str | None = None,
) -> LongDocumentClassifier:
    """``model.*`` / ``attention.*`` / ``head.*`` -> the network.

    The block size and number of random blocks are read from ``encoder_config`` only: they were put
    there from ``model.*`` once (``make_encoder_config``), so the backend and the encoder cannot disagree.
    """
    backend = build_backend(**attention, block_size=int(encoder_config["block_size"]),
                            num_random_blocks=int(encoder_config["num_random_blocks"]))
    encoder = build_encoder(
        encoder_config,
        with_pooler=head_class(head["name"]).uses_pooler,
        init_weights_from=init_weights_from,
        trust_remote_code=bool(model.get("trust_remote_code", False)),
    )
    if model.get("gradient_checkpointing"):
        encoder.gradient_checkpointing_enable()
    # HF's classification head uses the encoder's activation (activation: null); export parity depends on it
    head = {**head, "activation": head.get("activation") or encoder.config.hidden_act}
    network = LongDocumentClassifier(
        encoder, backend, build_head(**head, hidden_size=encoder.config.hidden_size, num_labels=num_labels))
    if model.get("compile"):
        # in place (nn.Module.compile): parameter names, checkpoints and export stay those of the eager model
        network.compile()
    return network
