"""Dynamic padding to a multiple of the block size, so HF's BigBird never pads internally."""

from __future__ import annotations

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

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int,
                 label_stacker: Callable[[Sequence[Any], int], torch.Tensor] | None = None) -> None:
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_stacker = label_stacker or (lambda labels, length: stack_labels(labels))
        self._collator = DataCollatorWithPadding(
            tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        kept = [{k: f[k] for k in self.model_keys if k in f and k != "labels"} for f in features]
        batch = dict(self._collator(kept))
        length = batch["input_ids"].shape[1]
        if features and "labels" in features[0]:
            batch["labels"] = self.label_stacker([f["labels"] for f in features], length)
        if features and "word_ids" in features[0]:
            # per-token: the word each position tags (-1: none), padded like the ids
            batch["word_ids"] = torch.tensor([list(f["word_ids"]) + [-1] * (length - len(f["word_ids"]))
                                              for f in features], dtype=torch.long)
        return batch


