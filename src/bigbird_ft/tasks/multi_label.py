"""Any set of labels per document: BCE-with-logits, sigmoid, subset accuracy / micro and macro F1."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelExactMatch, MultilabelF1Score

from .base import Task
from .registry import register_task


def split_labels(value: Any, separator: str | None) -> list[str]:
    """One multi-label cell -> label names: a list as is, a string split on ``separator``.

    An empty cell (None, or NaN as pandas reads it) is the empty label set.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value)
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


@register_task
class MultiLabel(Task):
    name = "multi_label_classification"
    weight_key = "pos_weight"
    metric_aliases = {"acc": "subset_acc", "f1": "f1_macro"}
    min_train_labels = 1

    def label_feature(self) -> Any:
        import datasets

        return datasets.List(datasets.Value("string"))

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        return functools.partial(split_labels, separator=separator)

    def label_sets(self, column: Sequence[Any]) -> set[str]:
        return {name for row in column for name in row}

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        def multi_hot(names: list[str]) -> list[float]:
            target = [0.0] * len(label2id)
            for name in names:
                target[label2id[name]] = 1.0
            return target

        return multi_hot

    def label_counts(self, labels: Sequence[Any], label2id: Mapping[str, int]) -> list[float]:
        counts = [0.0] * len(label2id)
        for names in labels:
            for name in names:
                counts[label2id[name]] += 1.0
        return counts

    def auto_weights(self, counts: Sequence[float], num_examples: int) -> list[float]:
        # negatives / positives per label: BCE's usual balance (torch's pos_weight docs)
        return [(num_examples - p) / max(p, 1.0) for p in counts]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        # the most probable label's log-odds, which for a sigmoid is its logit
        return logits.float().max(-1).values

    def metric_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.long()

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        return MetricCollection(
            {
                "subset_acc": MultilabelExactMatch(num_labels, threshold=threshold),
                "f1_micro": MultilabelF1Score(num_labels, threshold=threshold, average="micro"),
                "f1_macro": MultilabelF1Score(num_labels, threshold=threshold, average="macro"),
            }
        )

    def prediction_columns(self, outputs: torch.Tensor, id2label: Mapping[int, str],
                           threshold: float) -> dict[str, Any]:
        names = [id2label[i] for i in range(len(id2label))]
        chosen = outputs >= threshold
        joined = ["|".join(n for n, keep in zip(names, row, strict=True) if keep) for row in chosen.tolist()]
        return {"labels": joined, **self.probability_columns(outputs, id2label)}
