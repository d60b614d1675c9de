"""Dynamic padding to a multiple of the block size, so HF's BigBird never pads internally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


class BlockPaddingCollator:
    """Pads each batch to the smallest multiple of ``pad_to_multiple_of`` holding its longest row.

    transformers' DataCollatorWithPadding does the padding; this wrapper only keeps the model's
    keys (``labels``, ``row``) and drops text columns the tokenizer cannot pad. Labels are stacked
    here by their type: class ids -> long, multi-hot vectors and regression targets -> float32.
    """

    model_keys = ("input_ids", "attention_mask", "labels", "row")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int) -> None:
        self.pad_to_multiple_of = pad_to_multiple_of
        self._collator = DataCollatorWithPadding(
            tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        kept = [{k: f[k] for k in self.model_keys if k in f and k != "labels"} for f in features]
        batch = dict(self._collator(kept))
        if features and "labels" in features[0]:
            batch["labels"] = stack_labels([f["labels"] for f in features])
        return batch


def stack_labels(labels: Sequence[Any]) -> torch.Tensor:
    """Integer class ids stay long (cross-entropy); anything float is a float32 target (BCE, MSE)."""
    target = torch.as_tensor(labels)
    return target.float() if target.is_floating_point() else target.long()
