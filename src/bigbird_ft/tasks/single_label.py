"""One class per document: cross-entropy, softmax, accuracy / macro-F1 / per-class F1 / AUROC."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from ..errors import UserError
from .base import Task, balanced_weights
from .registry import register_task


@register_task
class SingleLabel(Task):
    name = "single_label_classification"
    weight_key = "class_weights"
    stratified_split = True
    calibrated = True

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        def to_str(value: Any) -> str:
            if isinstance(value, list | tuple):
                raise UserError(
                    f"label {value!r} of {source} is a list; set model.problem_type=multi_label_classification"
                )
            return str(value)

        return to_str

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        return label2id.__getitem__

    def label_counts(self, labels: Sequence[Any], label2id: Mapping[str, int]) -> list[float]:
        counts = [0.0] * len(label2id)
        for label in labels:
            counts[label2id[label]] += 1.0
        return counts

    def auto_weights(self, counts: Sequence[float], num_examples: int) -> list[float]:
        return balanced_weights(counts)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=label_smoothing)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(-1)

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        metrics: dict[str, Metric] = {
            "acc": MulticlassAccuracy(num_labels, average="micro"),
            "f1": MulticlassF1Score(num_labels, average="macro"),
            "f1_per_class": MulticlassF1Score(num_labels, average=None),
        }
        if num_labels == 2:
            # one-vs-rest AUROC of 2 classes = the binary AUROC of the positive class
            metrics["auroc"] = MulticlassAUROC(2, average="macro")
        return MetricCollection(metrics)

    def confusion(self, num_labels: int) -> Metric | None:
        return MulticlassConfusionMatrix(num_labels)

    def prediction_columns(self, outputs: torch.Tensor, id2label: Mapping[int, str],
                           threshold: float) -> dict[str, Any]:
        score, index = outputs.max(-1)
        columns = {"label": [id2label[int(i)] for i in index], "score": score.numpy()}
        return {**columns, **self.probability_columns(outputs, id2label)}
