"""One number per document: MSE, the raw output, MSE / MAE / Pearson / Spearman."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from ..errors import UserError
from .base import Task
from .registry import register_task

#: the one "label" of a regression model (id2label of its checkpoint and hf_model/)
REGRESSION_LABEL = "prediction"


@register_task
class Regression(Task):
    name = "regression"
    monitor = ("val/mse", "min")
    lower_is_better = ("mse", "mae")
    headline = ("mse",)

    def label_feature(self) -> Any:
        import datasets

        return datasets.Value("float64")

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        def to_float(value: Any) -> float:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise UserError(
                    f"label {value!r} of {source} is not a number, but model.problem_type=regression; "
                    "fix data.label_column or model.problem_type"
                ) from None

        return to_float

    def label_names(self, splits: Mapping[str, Sequence[Any]], sources: Mapping[str, str]) -> list[str]:
        return [REGRESSION_LABEL]

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        return float

    def check_labels(self, id2label: Mapping[int, str]) -> None:
        if len(id2label) != 1:
            raise UserError(f"problem_type=regression needs one output, got id2label={dict(id2label)}")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(-1)

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        # the predicted value: evidence = what pushed it up
        return logits.float().squeeze(-1)

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        return MetricCollection(
            {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(),
             "pearson": PearsonCorrCoef(), "spearman": SpearmanCorrCoef()}
        )

    def prediction_columns(self, outputs: torch.Tensor, id2label: Mapping[int, str],
                           threshold: float) -> dict[str, Any]:
        return {"prediction": outputs.numpy()}
