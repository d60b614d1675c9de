"""A problem type as one object: everything that differs between single-label, multi-label and regression.

Nothing outside ``tasks/`` branches on the problem type: the DataModule asks its task how to read
and encode labels, the LightningModule asks for the loss, outputs and metrics, predict asks for the
output columns. Adding a problem type = one module here + ``register_task`` + its test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import Metric, MetricCollection

from ..errors import UserError

#: per-label loss weights under ``model.``; each belongs to the one task whose ``weight_key`` it is
WEIGHT_KEYS = ("class_weights", "pos_weight")
#: weight key -> the name of the task it belongs to (filled by ``register_task``)
WEIGHT_KEY_OWNERS: dict[str, str] = {}


def metric_key(label: str) -> str:
    """A label name usable inside a logged metric name (no '/' nesting, no spaces)."""
    return re.sub(r"[/\s]+", "_", label)


class Task:
    """Stateless: the label names, weights and threshold it needs are handed in by the caller."""

    name: ClassVar[str]
    #: ``model.<key>`` holding per-label loss weights (``auto`` = from the training labels), or None
    weight_key: ClassVar[str | None] = None
    #: the default ``monitor`` / ``monitor_mode`` of a run of this type
    monitor: ClassVar[tuple[str, str]] = ("val/acc", "max")
    #: metric names also logged under a second name, so ``val/acc``/``val/f1`` exist for every type
    metric_aliases: ClassVar[Mapping[str, str]] = {}
    #: metrics where lower is better (best-so-far uses MinMetric)
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    #: shown in the progress bar
    headline: ClassVar[tuple[str, ...]] = ("acc", "f1")
    #: a validation split of train may keep the class proportions
    stratified_split: ClassVar[bool] = False
    #: fewer distinct training labels than this is an error (multi-label: one label can be learned)
    min_train_labels: ClassVar[int] = 2
    #: calibrate=true fits a softmax temperature after training (calibration.py)
    calibrated: ClassVar[bool] = False

    # ------------------------------------------------------------------ labels
    def label_feature(self) -> Any:
        """The ``datasets`` feature of a normalised label (explicit, so empty label lists keep their type).

        ``datasets`` is imported here, not at module level: training has it loaded already, and
        predict / export / a plain model stay ~80 MB lighter without it.
        """
        import datasets

        return datasets.Value("string")

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        """Raw label cell -> the normalised label stored in the raw splits."""
        raise NotImplementedError

    def label_sets(self, column: Sequence[Any]) -> set[str]:
        """The label names used in one split's normalised label column."""
        return {str(v) for v in column}

    def label_names(self, splits: Mapping[str, Sequence[Any]], source: str) -> list[str]:
        """Sorted training label names; an evaluation label unseen in train is an error."""
        names = sort_labels(self.label_sets(splits["train"]))
        if len(names) < self.min_train_labels:
            found = names[0] if names else "none"
            raise UserError(f"the training labels hold one class only ({found}); check data.label_column")
        for split in ("validation", "test"):
            if split in splits:
                unseen = sorted(self.label_sets(splits[split]) - set(names))
                if unseen:
                    raise UserError(
                        f"labels {unseen} appear in the {split} split but not in train "
                        f"(train labels: {names}); fix {source}"
                    )
        return names

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        """Normalised label -> the model's target (class id, multi-hot vector, or value)."""
        raise NotImplementedError

    def label_counts(self, labels: Sequence[Any], label2id: Mapping[str, int]) -> list[float]:
        """Training examples per label (positives per label for multi-label)."""
        raise NotImplementedError(f"{self.name} has no per-label counts")

    def auto_weights(self, counts: Sequence[float], num_examples: int) -> list[float]:
        """``model.<weight_key>=auto`` from the training label counts."""
        raise NotImplementedError

    def resolve_weights(self, model_cfg: Mapping[str, Any], train_labels: Callable[[], Sequence[Any]],
                        label2id: Mapping[str, int]) -> dict[str, Any]:
        """``model.class_weights``/``pos_weight``: ``auto`` -> a list from the training labels (kept in hparams)."""
        model_cfg = dict(model_cfg)
        for key in self.checked_weight_keys(model_cfg):
            value = model_cfg[key]
            if value == "auto":
                labels = train_labels()
                model_cfg[key] = self.auto_weights(self.label_counts(labels, label2id), len(labels))
                rank_zero_info(f"model.{key}=auto: {[round(w, 4) for w in model_cfg[key]]}")
            elif isinstance(value, str):
                raise UserError(f"model.{key}={value} is not understood; use auto, a list of numbers or null")
        return model_cfg

    def loss_weights(self, model_cfg: Mapping[str, Any], id2label: Mapping[int, str]) -> torch.Tensor | None:
        """The resolved weights as a tensor of one value per label, or None."""
        if not self.checked_weight_keys(model_cfg):
            return None
        key = self.weight_key
        value = model_cfg[key]
        if isinstance(value, str):
            raise UserError(f"model.{key}={value} must be resolved to a list before the model is built")
        weights = torch.tensor([float(v) for v in value])
        if weights.numel() != len(id2label):
            raise UserError(
                f"model.{key} has {weights.numel()} values for {len(id2label)} labels "
                f"{list(id2label.values())}; fix model.{key}"
            )
        return weights

    def checked_weight_keys(self, model_cfg: Mapping[str, Any]) -> list[str]:
        """The weight keys set in ``model_cfg``; one that belongs to another task is an error."""
        keys = [k for k in WEIGHT_KEYS if model_cfg.get(k) is not None]
        for key in keys:
            if key != self.weight_key:
                raise UserError(f"model.{key} applies to {WEIGHT_KEY_OWNERS[key]} only; set model.{key}=null")
        return keys

    def check_labels(self, id2label: Mapping[int, str]) -> None:
        """A label mapping this task cannot train on ends here."""

    # -------------------------------------------------------------- the model
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what a user reads (probabilities or values), float32."""
        raise NotImplementedError

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        """The scalar whose gradient says which tokens support the prediction (evidence.py), per
        document: the log-odds of the predicted class, log p / (1 - p). Its gradient does not vanish
        when the model is sure (the log-probability's does: measured, the top-1 span then found the
        evidence in 59 % of documents, bench/results/evidence_logprob_target.json)."""
        logits = logits.float()
        predicted = logits.argmax(-1, keepdim=True)
        others = logits.scatter(-1, predicted, float("-inf")).logsumexp(-1)
        return logits.gather(-1, predicted).squeeze(-1) - others

    def metric_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def metrics(self, num_labels: int, threshold: float) -> MetricCollection:
        raise NotImplementedError

    def confusion(self, num_labels: int) -> Metric | None:
        return None

    def spread(self, values: dict[str, torch.Tensor], stage: str, id2label: Mapping[int, str]) -> dict[str, Any]:
        """Computed metric values -> logged ones: per-class tensors spread by label name, aliases added."""
        per_class = values.pop(f"{stage}/f1_per_class", None)
        if per_class is not None:
            for idx, name in sorted(id2label.items()):
                values[f"{stage}/f1_{metric_key(name)}"] = per_class[idx]
        for alias, source in self.metric_aliases.items():
            values[f"{stage}/{alias}"] = values[f"{stage}/{source}"]
        return values

    def best_trackers(self, metrics: MetricCollection) -> list[str]:
        """Scalar names of ``metrics`` (and their aliases) that get a ``val/<name>_best`` tracker."""
        return [n for n in metrics.keys(keep_base=True) if n != "f1_per_class"] + list(self.metric_aliases)

    # ---------------------------------------------------------------- predict
    def prediction_columns(self, outputs: torch.Tensor, id2label: Mapping[int, str],
                           threshold: float) -> dict[str, Any]:
        """INTERFACE.md's predict columns after ``id``."""
        raise NotImplementedError

    @staticmethod
    def probability_columns(outputs: torch.Tensor, id2label: Mapping[int, str]) -> dict[str, Any]:
        return {f"prob_{name}": outputs[:, idx].numpy() for idx, name in sorted(id2label.items())}


def sort_labels(values: set[Any]) -> list[str]:
    """Integer-like labels sort numerically ("2" before "10"), others as strings."""
    as_text = {str(v) for v in values}
    try:
        return [str(v) for v in sorted(as_text, key=lambda v: float(v))]
    except ValueError:
        return sorted(as_text)
