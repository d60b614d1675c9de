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
#: how the model reads a document longer than one window (conf/reader/, docs/readers.md)
READERS = ("sparse", "truncate", "head_tail", "chunks", "hierarchical")
AGGREGATIONS = ("mean", "max")


@dataclass(frozen=True)
class Reader:
    """How a document becomes one or more model inputs, and (chunks, hierarchical) how they are combined.

    ``data.max_length`` is what a reader may read of a document; ``window`` what one model input holds
    ([CLS] and [SEP] included; null = ``data.max_length``).
    """

    name: str = "sparse"
    window: int | None = None    #: truncate, chunks, hierarchical: tokens per model input
    head_tokens: int = 128       #: head_tail: the first tokens kept ...
    tail_tokens: int = 382       #: ... and the last
    stride: int = 0              #: chunks, hierarchical: tokens shared by consecutive windows
    aggregation: str = "mean"    #: chunks: window logits -> document logits
    doc_layers: int = 1          #: hierarchical: transformer layers over the segment vectors

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> Reader:
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"reader.{unknown[0]} is not a reader key; remove it (keys: "
                            f"{', '.join(f.name for f in dataclasses.fields(cls))})")
        reader = cls(**{k: v for k, v in values.items() if v is not None or k == "window"})
        if reader.name not in READERS:
            raise UserError(f"reader={reader.name} is not one of {', '.join(READERS)}; fix reader")
        if reader.aggregation not in AGGREGATIONS:
            raise UserError(f"reader.aggregation={reader.aggregation} must be mean or max; fix reader.aggregation")
        for key in ("head_tokens", "tail_tokens", "stride", "doc_layers"):
            if int(getattr(reader, key)) < 0:
                raise UserError(f"reader.{key}={getattr(reader, key)} must not be negative; fix reader.{key}")
        if reader.window is not None and int(reader.window) < 3:
            raise UserError(f"reader.window={reader.window} leaves no room for text; raise reader.window")
        return reader

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def segmented(self) -> bool:
        """A document is several inputs that the network combines (one prediction per document)."""
        return self.name in ("chunks", "hierarchical")


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
    reader: Reader = Reader()
    question_column: str = "question"          #: question answering: the question of a row ...
    context_column: str = "context"            #: ... the context it is asked of
    max_answer_length: int = 30                #: ... the longest answer, in tokens
    null_answers: bool = False                 #: ... whether "no answer" ([CLS]) may be predicted

    # ------------------------------------------------------------ checkpoint
    def to_hparams(self) -> dict[str, Any]:
        """The ``data`` hyperparameters of a checkpoint (the key names predate this class)."""
        return {"max_length": self.max_length, "pad_to_multiple_of": self.pad_to_multiple_of,
                "chunk_stride": self.stride, "text_column": list(self.text_columns),
                "text_separator": self.text_separator, "tokens_column": self.tokens_column,
                "tags_column": self.tags_column, "eval_batch_size": self.eval_batch_size,
                "reader": self.reader.to_dict(), "question_column": self.question_column,
                "context_column": self.context_column, "max_answer_length": self.max_answer_length,
                "null_answers": self.null_answers}

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
            reader=Reader.from_config(data.get("reader")),  # before readers: sparse
            question_column=str(data.get("question_column", defaults.question_column)),
            context_column=str(data.get("context_column", defaults.context_column)),
            max_answer_length=int(data.get("max_answer_length", defaults.max_answer_length)),
            null_answers=bool(data.get("null_answers", defaults.null_answers)),
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
        if self.reader.segmented and not 0 <= self.reader.stride < self.body:
            raise UserError(f"reader.stride={self.reader.stride} must be in [0, {self.body}) for a window of "
                            f"{self.input_length} tokens; fix reader.stride")
        if self.max_answer_length < 1:
            raise UserError(f"{prefix}max_answer_length={self.max_answer_length} must be at least 1; fix "
                            f"{prefix}max_answer_length")
        if self.reader.name == "head_tail" and self.reader.head_tokens + self.reader.tail_tokens < 1:
            raise UserError("reader.head_tokens + reader.tail_tokens is 0: nothing would be read; raise either")

    # --------------------------------------------------------------- windows
    @property
    def input_length(self) -> int:
        """Tokens of one model input, [CLS] and [SEP] included: what the position table must hold."""
        reader = self.reader
        if reader.name == "sparse":
            return self.max_length
        if reader.name == "head_tail":
            return reader.head_tokens + reader.tail_tokens + 2
        return min(int(reader.window or self.max_length), self.max_length)

    @property
    def body(self) -> int:
        """Content tokens per input: the input length less [CLS] and [SEP]."""
        return self.input_length - 2

    @property
    def max_segments(self) -> int:
        """chunks / hierarchical: the most windows a document of ``max_length`` tokens becomes."""
        return len(self.segment_starts(self.max_length - 2))

    def segment_starts(self, n_tokens: int) -> list[int]:
        """chunks / hierarchical: where each window starts in the first ``max_length - 2`` content tokens."""
        n_tokens = min(n_tokens, self.max_length - 2)
        step = self.body - self.reader.stride
        starts = [0]
        while starts[-1] + self.body < n_tokens:
            starts.append(starts[-1] + step)
        return starts

    def document_inputs(self, content: Sequence[int], cls_id: int, sep_id: int, long_docs: str = "truncate"
                        ) -> list[tuple[list[int], list[int]]]:
        """(content positions read, ``[CLS] those tokens [SEP]``) for each model input of one document,
        as the reader reads it (``long_docs=chunk``: predict's windows over the whole document, for the
        readers of one input)."""
        reader, n = self.reader, len(content)
        if reader.segmented:
            budget = min(n, self.max_length - 2)
            positions = [list(range(s, min(s + self.body, budget))) for s in self.segment_starts(n)]
        elif reader.name == "head_tail" and long_docs != "chunk":
            head, tail = reader.head_tokens, reader.tail_tokens
            positions = [list(range(n)) if n <= head + tail else [*range(head), *range(n - tail, n)]]
        else:
            positions = [list(range(s, min(s + self.body, n))) for s in self.window_starts(n, long_docs)]
        return [(p, [cls_id, *(content[i] for i in p), sep_id]) for p in positions]

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
        return tokenizer(list(texts), truncation=True, max_length=self.input_length)["input_ids"]

    def read(self, tokenizer: Any, texts: Sequence[str], long_docs: str = "truncate", train: bool = False
             ) -> list[tuple[int, list[int] | list[list[int]], int]]:
        """(document row, its input ids, content tokens of the document) per model input.

        The ids are one list per input, or (chunks and hierarchical, outside chunks' training) a list of
        windows: one input per document that the network combines. Training on ``reader=chunks``
        (``train``) gives each window as an input of its own, carrying the document's label.
        """
        if long_docs not in LONG_DOCS:
            raise UserError(f"unknown long_docs '{long_docs}'; use truncate or chunk")
        if self.reader.name in ("sparse", "truncate") and long_docs == "truncate":
            # the tokenizer stops at the length: a document that fills the input is counted one token
            # longer than what was read (cut), its true length is not computed
            return [(row, ids, len(ids) - 2 + (len(ids) >= self.input_length))
                    for row, ids in enumerate(self.truncated(tokenizer, texts))]
        contents = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        out: list[tuple[int, Any, int]] = []
        for row, content in enumerate(contents):
            inputs = [ids for _, ids in self.document_inputs(content, tokenizer.cls_token_id,
                                                               tokenizer.sep_token_id, long_docs)]
            if self.reader.segmented and not (train and self.reader.name == "chunks"):
                out.append((row, inputs, len(content)))
            else:
                out.extend((row, ids, len(content)) for ids in inputs)
        return out

    def encode(self, tokenizer: Any, texts: Sequence[str], long_docs: str = "truncate") -> list[dict[str, Any]]:
        """One feature per model input, ``row`` = the document it belongs to."""
        return [{"input_ids": ids, "row": row} for row, ids, _ in self.read(tokenizer, texts, long_docs)]

    def reads_whole_document(self) -> bool:
        """The reader itself covers the document (predict's ``long_docs=chunk`` then has nothing to add)."""
        return self.reader.name in ("head_tail", "chunks", "hierarchical")

    # ----------------------------------------------------------------- rows
    def join_text(self, record: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
        """A row's text columns joined into the document (a missing cell counts as empty)."""
        parts = [record[c] for c in (columns or self.text_columns)]
        return self.text_separator.join("" if p is None else str(p) for p in parts)

    def collator(self, tokenizer: Any,
                 label_stacker: Callable[[Sequence[Any], int], torch.Tensor] | None = None) -> BlockPaddingCollator:
        return BlockPaddingCollator(tokenizer, self.pad_to_multiple_of, label_stacker)
