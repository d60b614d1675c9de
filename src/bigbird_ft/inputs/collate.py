"""Dynamic padding to a multiple of the block size, so HF's BigBird never pads internally."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .documents import stack_labels


class BlockPaddingCollator:
    """Pads each batch to the smallest multiple of ``pad_to_multiple_of`` holding its longest row.

    transformers' DataCollatorWithPadding does the padding; this wrapper only keeps the model's
    keys (``labels``, ``row``, ``word_ids``) and drops text columns the tokenizer cannot pad. The
    task stacks the labels (``Task.stack_labels``; by default by their type: class ids -> long,
    multi-hot vectors and regression targets -> float32; per-token tags padded with -100).
    """

    model_keys = ("input_ids", "attention_mask", "labels", "row")
    #: per-token integer features (token classification, question answering), padded with -1
    per_token_keys = ("word_ids", "char_starts", "char_ends")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int,
                 label_stacker: Callable[[Sequence[Any], int], torch.Tensor] | None = None) -> None:
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_stacker = label_stacker or (lambda labels, length: stack_labels(labels))
        self._collator = DataCollatorWithPadding(
            tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if features and features[0]["input_ids"] and not isinstance(features[0]["input_ids"][0], int):
            return self.segmented(features)
        kept = [{k: f[k] for k in self.model_keys if k in f and k != "labels"} for f in features]
        batch = dict(self._collator(kept))
        length = batch["input_ids"].shape[1]
        if features and "labels" in features[0]:
            batch["labels"] = self.label_stacker([f["labels"] for f in features], length)
        for key in self.per_token_keys:
            if features and key in features[0]:
                # per-token: the word each position tags, a token's character span (-1: none), padded like the ids
                batch[key] = torch.tensor([list(f[key]) + [-1] * (length - len(f[key])) for f in features],
                                          dtype=torch.long)
        return batch

    def segmented(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Documents read as several windows (``reader=chunks`` / ``hierarchical``): ``[documents, windows,
        length]``, every window padded like a row of a flat batch; a document with fewer windows gets
        all-padding ones (an attention mask of zeros), which the network skips."""
        windows = [{"input_ids": ids} for f in features for ids in f["input_ids"]]
        flat = self._collator(windows)
        counts = [len(f["input_ids"]) for f in features]
        shape = (len(features), max(counts), flat["input_ids"].shape[1])
        input_ids = torch.full(shape, int(self._collator.tokenizer.pad_token_id or 0), dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        start = 0
        for doc, count in enumerate(counts):
            input_ids[doc, :count] = flat["input_ids"][start:start + count]
            attention_mask[doc, :count] = flat["attention_mask"][start:start + count]
            start += count
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "row" in features[0]:
            batch["row"] = torch.tensor([int(f["row"]) for f in features], dtype=torch.long)
        if "labels" in features[0]:
            batch["labels"] = self.label_stacker([f["labels"] for f in features], shape[-1])
        return batch


def split_short_windows(lengths: Sequence[int], padded_length: int, multiple: int) -> tuple[list[bool], int]:
    """Which windows of a batch are encoded apart (at most half the padded length), and the length they
    are cut to: their longest, up to the block multiple; 0 when all or none are short (one group).
    The network (``models/network.py``) encodes by this rule and the estimate prices a batch by it."""
    short = [n <= padded_length // 2 for n in lengths]
    if not any(short) or all(short):
        return short, 0
    return short, math.ceil(max(n for n, s in zip(lengths, short, strict=True) if s) / multiple) * multiple
