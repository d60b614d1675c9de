"""How a document becomes model inputs: one specification for training, predict, tagging, evidence and
the cost estimate.

``DataModule.connect`` builds it once from the ``data.*`` keys and the model (its block size and
position table), the checkpoint stores it (``hparams.data``), and every reader of documents asks it
for the length, the windows over a long document, the padding multiple and the text columns, so
none of them keeps its own defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError
from .collate import BlockPaddingCollator

LONG_DOCS = ("truncate", "chunk")


@dataclass(frozen=True)
class InputSpec:
    max_length: int                            #: tokens per model input, [CLS] and [SEP] included
    pad_to_multiple_of: int                    #: batches are padded to a multiple of this (the block size)
    stride: int = 128                          #: tokens shared by consecutive windows of a long document
    text_columns: tuple[str, ...] = ("text",)  #: joined with ``text_separator`` into the document
    text_separator: str = "\n\n"
    tokens_column: str = "tokens"              #: token classification: the word list of a row
    tags_column: str = "ner_tags"              #: ... and its tags
    eval_batch_size: int = 16

    # ------------------------------------------------------------ checkpoint
    def to_hparams(self) -> dict[str, Any]:
        """The ``data`` hyperparameters of a checkpoint (the key names predate this class)."""
        return {"max_length": self.max_length, "pad_to_multiple_of": self.pad_to_multiple_of,
                "chunk_stride": self.stride, "text_column": list(self.text_columns),
                "text_separator": self.text_separator, "tokens_column": self.tokens_column,
                "tags_column": self.tags_column, "eval_batch_size": self.eval_batch_size}

    @classmethod
    def from_hparams(cls, data: Mapping[str, Any] | None, block_size: int) -> InputSpec:
        """The spec a checkpoint carries; one written before a key existed gets that key's default here."""
        data = dict(data or {})
        columns = data.get("text_column", "text")
        # eval_batch_size 8: what predict used before checkpoints stored it
        defaults = cls(max_length=4096, pad_to_multiple_of=block_size, eval_batch_size=8)
        return cls(
            max_length=int(data.get("max_length", defaults.max_length)),
            pad_to_multiple_of=int(data.get("pad_to_multiple_of") or block_size),
            stride=int(data.get("chunk_stride", defaults.stride)),
            text_columns=(columns,) if isinstance(columns, str) else tuple(columns),
            text_separator=str(data.get("text_separator", defaults.text_separator)),
            tokens_column=str(data.get("tokens_column", defaults.tokens_column)),
            tags_column=str(data.get("tags_column", defaults.tags_column)),
            eval_batch_size=int(data.get("eval_batch_size", defaults.eval_batch_size)),
        )

    def replace(self, **changes: Any) -> InputSpec:
        """A copy with the values a command line sets (``None`` keeps the stored one)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "text_columns" in changes:
            columns = changes["text_columns"]
            changes["text_columns"] = (columns,) if isinstance(columns, str) else tuple(columns)
        return dataclasses.replace(self, **changes)

    def check(self, windows: bool = True, prefix: str = "") -> None:
        """The length leaves room for text; with ``windows`` (a reader that cuts documents into
        overlapping inputs) the stride is shorter than a window. ``prefix``: ``data.`` in training."""
        if self.max_length < 3:
            raise UserError(f"{prefix}max_length={self.max_length} leaves no room for text between [CLS] and [SEP]; "
                            f"raise {prefix}max_length")
        if windows and not 0 <= self.stride < self.body:
            raise UserError(f"{prefix}chunk_stride={self.stride} must be in [0, {self.body}) for {prefix}max_length="
                            f"{self.max_length}; fix {prefix}chunk_stride")

    # --------------------------------------------------------------- windows
    @property
    def body(self) -> int:
        """Content tokens per input: the length less [CLS] and [SEP]."""
        return self.max_length - 2

    def window_starts(self, n_tokens: int, long_docs: str = "truncate") -> list[int]:
        """Where each model input starts in a document's content tokens: one (truncate), or windows of
        ``body`` tokens that overlap by ``stride`` until the last token is covered (chunk)."""
        if long_docs not in LONG_DOCS:
            raise UserError(f"unknown long_docs '{long_docs}'; use truncate or chunk")
        starts = [0]
        if long_docs == "chunk":
            while starts[-1] + self.body < n_tokens:
                starts.append(starts[-1] + self.body - self.stride)
        return starts

    def windows(self, content: Sequence[int], cls_id: int, sep_id: int,
                long_docs: str = "truncate") -> list[tuple[int, list[int]]]:
        """(start, ``[CLS] content[start:start+body] [SEP]``) for each model input of one document."""
        return [(start, [cls_id, *content[start:start + self.body], sep_id])
                for start in self.window_starts(len(content), long_docs)]

    def truncated(self, tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] first body tokens [SEP]`` per document: the tokenizer stops at the length, which for
        long documents is much faster than tokenizing all of it and cutting."""
        return tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def encode(self, tokenizer: Any, texts: Sequence[str], long_docs: str = "truncate") -> list[dict[str, Any]]:
        """One feature per model input, ``row`` = the document it belongs to."""
        if long_docs == "truncate":
            return [{"input_ids": x, "row": row} for row, x in enumerate(self.truncated(tokenizer, texts))]
        contents = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [{"input_ids": ids, "row": row} for row, content in enumerate(contents)
                for _, ids in self.windows(content, tokenizer.cls_token_id, tokenizer.sep_token_id, long_docs)]

    # ----------------------------------------------------------------- rows
    def join_text(self, record: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
        """A row's text columns joined into the document (a missing cell counts as empty)."""
        parts = [record[c] for c in (columns or self.text_columns)]
        return self.text_separator.join("" if p is None else str(p) for p in parts)

    def collator(self, tokenizer: Any,
                 label_stacker: Callable[[Sequence[Any], int], torch.Tensor] | None = None) -> BlockPaddingCollator:
        return BlockPaddingCollator(tokenizer, self.pad_to_multiple_of, label_stacker)
