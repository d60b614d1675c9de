"""The network alone: BigBird encoder + attention backend + head, built from the config by one factory.

It knows nothing of losses, metrics or optimizers (the task and the LightningModule own those), so
export, predict, the benches and the tests use the same object training uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..attention import build_backend
from ..attention.base import AttentionBackend
from ..heads import build_head, head_class
from ..inputs.collate import split_short_windows
from .encoder import build_encoder


class DocumentLayer(nn.Module):
    """``reader=hierarchical``: each segment's mean token vector, plus a learned segment position, then a
    small transformer over the segments of a document (ToBERT-style; torch's encoder layer, nothing
    hand-written but the pooling). The head then pools the segment vectors as it pools tokens."""

    def __init__(self, hidden_size: int, max_segments: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.positions = nn.Embedding(max_segments, hidden_size)
        nn.init.normal_(self.positions.weight, std=0.02)
        heads = next(h for h in (hidden_size // 64, 8, 4, 2, 1) if h >= 1 and hidden_size % h == 0)
        layer = nn.TransformerEncoderLayer(hidden_size, heads, 4 * hidden_size, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None

    def forward(self, vectors: torch.Tensor, segment_mask: torch.Tensor) -> torch.Tensor:
        """``[documents, segments, hidden]`` -> the same, each segment seen in its document."""
        x = vectors + self.positions.weight[: vectors.shape[1]]
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=~segment_mask.bool())
        return x


class LongDocumentClassifier(nn.Module):
    """``(input_ids, attention_mask) -> logits``; the backend decides how attention is computed.

    A ``[documents, windows, length]`` batch (``reader=chunks`` / ``hierarchical``) is encoded window by
    window (padding windows skipped) and combined into one row of logits per document: the windows'
    logits averaged or maxed (chunks), or the segment vectors read by ``document_layer`` (hierarchical).
    """

    def __init__(self, encoder: nn.Module, backend: AttentionBackend, head: nn.Module,
                 document_layer: DocumentLayer | None = None, aggregation: str = "mean") -> None:
        super().__init__()
        self.encoder = encoder
        self.backend = backend
        self.head = head
        self.document_layer = document_layer
        self.aggregation = aggregation
        backend.attach(encoder)
        #: encode_windows may split a batch's windows in two encoder calls; evidence, which hooks the
        #: embeddings of one call, turns it off (``one_encoder_call``)
        self.group_short_windows = True
        # logits are divided by it: 1 while training, fitted on validation after (calibration.py)
        self.register_buffer("temperature", torch.tensor(1.0))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.dim() == 3:
            return self.forward_documents(input_ids, attention_mask) / self.temperature
        if getattr(self.head, "pair_input", False):
            return self.forward_pairs(input_ids, attention_mask)
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask)
        return self.head(hidden, attention_mask, getattr(self.encoder, "pooler", None)) / self.temperature

    def forward_pairs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[CLS] question [SEP] context [SEP]`` -> start and end logits, as ``BigBirdForQuestionAnswering``
        computes them (so an export is that stock model): segment 0 up to the first [SEP], 1 after, and
        the question's logits pushed down by 1e6 so no answer starts or ends there ([CLS] stays: the null
        answer)."""
        question = question_mask(input_ids, int(self.encoder.config.sep_token_id))
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask, (1 - question).to(input_ids.dtype))
        question[:, 0] = 0
        return self.head(hidden, attention_mask) - question.unsqueeze(-1) * 1e6

    @contextmanager
    def one_encoder_call(self) -> Iterator[None]:
        """Every window of a batch in one encoder call, padded as the collator padded it."""
        saved, self.group_short_windows = self.group_short_windows, False
        try:
            yield
        finally:
            self.group_short_windows = saved

    def encode_windows(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The windows of a batch, the short ones encoded apart, cut to their own longest.

        The collator pads every window to the batch's longest, but a document's last window is mostly
        short: encoded with the full ones it pays for its padding (hierarchical on Hyperpartisan: 81 % of
        the padded tokens real). Padding is masked out, so cutting it off changes no real token's vector.
        """
        if not self.group_short_windows or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.backend.encode(self.encoder, ids, mask)
        multiple = int(getattr(self.encoder.config, "block_size", 1) or 1)
        flags, cut = split_short_windows(mask.sum(-1).tolist(), ids.shape[1], multiple)
        if not cut:
            return self.backend.encode(self.encoder, ids, mask)
        short = torch.tensor(flags, device=ids.device)
        long_hidden = self.backend.encode(self.encoder, ids[~short], mask[~short])
        short_hidden = self.backend.encode(self.encoder, ids[short, :cut].contiguous(), mask[short, :cut].contiguous())
        hidden = long_hidden.new_zeros((*ids.shape, long_hidden.shape[-1]))
        hidden[~short] = long_hidden
        hidden[short, :cut] = short_hidden
        return hidden

    def forward_documents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        present = attention_mask.any(-1)                          # [documents, windows]
        ids, mask = input_ids[present], attention_mask[present]  # the real windows only
        hidden = self.encode_windows(ids, mask)
        if self.document_layer is None:                            # chunks: one prediction per window
            logits = self.head(hidden, mask, getattr(self.encoder, "pooler", None))
            per_window = logits.new_full((*present.shape, logits.shape[-1]),
                                         float("-inf") if self.aggregation == "max" else 0.0)
            per_window[present] = logits
            if self.aggregation == "max":
                return per_window.max(1).values
            return per_window.sum(1) / present.sum(1, keepdim=True).clamp_min(1)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        segments = vectors.new_zeros((*present.shape, vectors.shape[-1]))
        segments[present] = vectors
        return self.head(self.document_layer(segments, present), present.long(), None)


def question_mask(input_ids: torch.Tensor, sep_token_id: int) -> torch.Tensor:
    """1 from [CLS] up to the first [SEP] (included), 0 after: the question of a pair (HF's rule)."""
    lengths = input_ids.eq(sep_token_id).int().argmax(-1, keepdim=True) + 1
    return (torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0) < lengths).long()


def build_model(
    model: Mapping[str, Any],
    attention: Mapping[str, Any],
    head: Mapping[str, Any],
    encoder_config: Mapping[str, Any],
    num_labels: int,
    init_weights_from: str | None = None,
    reader: Any = None,
) -> LongDocumentClassifier:
    """``model.*`` / ``attention.*`` / ``head.*`` -> the network.

    The block size and number of random blocks are read from ``encoder_config`` only: they were put
    there from ``model.*`` once (``make_encoder_config``), so the backend and the encoder cannot disagree.
    ``reader``: the run's ``InputSpec`` (hierarchical adds a document layer, chunks its aggregation).
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
    document_layer, aggregation = None, "mean"
    if reader is not None and reader.reader.name == "hierarchical":
        document_layer = DocumentLayer(encoder.config.hidden_size, reader.max_segments, reader.reader.doc_layers,
                                       float(encoder.config.hidden_dropout_prob))
    elif reader is not None:
        aggregation = reader.reader.aggregation
    extra = {"encoder_config": encoder.config} if head_class(head["name"]).uses_encoder_config else {}
    network = LongDocumentClassifier(
        encoder, backend, build_head(**head, hidden_size=encoder.config.hidden_size, num_labels=num_labels, **extra),
        document_layer, aggregation)
    if model.get("compile"):
        # in place (nn.Module.compile): parameter names, checkpoints and export stay those of the eager model
        network.compile()
    return network
