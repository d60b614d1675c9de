"""The LightningModule: the training, evaluation and predict steps, wired to a task and a network.

What differs by problem type lives in the task (``tasks/``), the network in ``network.py``, how
documents become inputs in ``inputs/spec.py``, the optimizer recipe in ``training/optim.py``, the
checkpoint format in ``checkpoints.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric
from transformers import PreTrainedTokenizerBase

from ..attention.base import AttentionBackend
from ..errors import UserError
from ..heads import head_class
from ..heads.base import Head
from ..inputs.spec import InputSpec
from ..tasks import DEFAULT_TASK, task_for
from ..training.callbacks import ExactResume, FreezeEncoder, token_throughput
from ..training.optim import build_optimizer, optimizer_config
from ..training.plots import plot_confusion
from .checkpoints import add_extras, read_extras
from .network import build_model


class BigBirdClassifier(L.LightningModule):
    """Long-document classifier.

    Every constructor argument is a plain dict saved with ``save_hyperparameters``; together with
    the tokenizer files stored in the checkpoint, ``load_from_checkpoint(path)`` alone rebuilds the
    model, its head, its label names and its tokenizer. Build one with ``factory.build_classifier``.
    """

    #: ThroughputMonitor reads this; the FLOPs of a sparse-attention step are not known up front
    flops_per_batch: int | None = None

    def __init__(self, model: Mapping[str, Any], attention: Mapping[str, Any], head: Mapping[str, Any],
                 optim: Mapping[str, Any], id2label: Mapping[int, str], encoder_config: Mapping[str, Any],
                 problem_type: str = DEFAULT_TASK, data: Mapping[str, Any] | None = None,
                 init_weights_from: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = task_for(problem_type)
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.task.check_labels(self.id2label)
        self.task.check_head(head_class(head["name"]))
        #: how documents become inputs (one spec from training; old checkpoints get its defaults)
        self.inputs = InputSpec.from_hparams(data, int(encoder_config["block_size"]))
        self.task.check_reader(self.inputs.reader)
        if self.inputs.reader.name == "hierarchical" and head_class(head["name"]).uses_pooler:
            raise UserError("head=pooler pools BigBird's [CLS] pooler, which reader=hierarchical's segment vectors do "
                            "not have: set head=mean, attention, max or cls")
        self.model = build_model(model, attention, head, encoder_config, self.num_labels, init_weights_from,
                                 reader=self.inputs)
        self.label_smoothing = float(optim.get("label_smoothing", 0.0) or 0.0)
        self.threshold = 0.5 if model.get("threshold") is None else float(model["threshold"])
        # non-persistent: the resolved values live in hparams, so checkpoints load unchanged
        self.register_buffer("loss_weights", self.task.loss_weights(model, self.id2label), persistent=False)
        self.tokenizer: PreTrainedTokenizerBase | None = None

        metrics = self.task.metrics(self.num_labels, self.threshold, self.id2label, inputs=self.inputs)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.best_metrics = nn.ModuleDict({name: MinMetric() if name in self.task.lower_is_better else MaxMetric()
                                           for name in self.task.best_trackers(metrics)})
        self.val_confusion = self.task.confusion(self.num_labels)
        self.test_confusion = self.task.confusion(self.num_labels)

    # ---------------------------------------------------------------- parts
    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def backend(self) -> AttentionBackend:
        return self.model.backend

    @property
    def head(self) -> Head:
        return self.model.head

    @property
    def problem_type(self) -> str:
        return self.task.name

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: idx for idx, label in self.id2label.items()}

    # -------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.task.loss(logits, labels, self.loss_weights, self.label_smoothing)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return self.task.outputs(logits)

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss(logits := self(batch["input_ids"], batch["attention_mask"]), batch["labels"]), logits

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        if not torch.isfinite(loss):
            # stop before the optimizer step writes NaN into the weights; checkpoints on disk stay good
            raise UserError(f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                            "lower optim.lr or set trainer.gradient_clip_val (the last good checkpoint is in checkpoints/)")
        size = len(batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        mask = batch["attention_mask"]
        if mask.dim() == 3:  # windows of documents: the all-padding windows are skipped, not computed
            mask = mask[mask.any(-1)]
        self.log("train/pad_efficiency", mask.sum().float() / mask.numel(), batch_size=size)
        return loss

    def on_train_start(self) -> None:
        # a sanity-check pass must not leave its values in the best-so-far trackers
        for tracker in self.best_metrics.values():
            tracker.reset()

    def _eval_step(self, stage: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch)
        getattr(self, f"{stage}_loss").update(loss, weight=len(batch["labels"]))
        preds = self.outputs(logits)
        self.task.update_metrics(getattr(self, f"{stage}_metrics"), preds, batch)
        confusion = getattr(self, f"{stage}_confusion")
        if confusion is not None:
            confusion.update(preds, batch["labels"])
        return {"logits": logits}  # for callbacks (calibration.TemperatureScaling)

    def _eval_epoch_end(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the computed (rank-synced) metrics and the loss; draw the confusion matrix on rank 0."""
        collection = getattr(self, f"{stage}_metrics")
        self.task.bind_references(collection, self._trainer and self.trainer.datamodule, stage)
        values = self.task.spread(dict(collection.compute()), stage, self.id2label)
        collection.reset()
        loss = getattr(self, f"{stage}_loss")
        self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "val")
        loss.reset()
        headline = {k: v for k, v in values.items() if k.split("/", 1)[1] in self.task.headline}
        self.log_dict(headline, prog_bar=stage == "val")
        self.log_dict({k: v for k, v in values.items() if k not in headline})
        plot_confusion(self, stage)
        return values

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        values = self._eval_epoch_end("val")
        if not self.trainer.sanity_checking:
            for name, tracker in self.best_metrics.items():
                tracker.update(values[f"val/{name}"])
                self.log(f"val/{name}_best", tracker.compute())

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.task.predict_outputs(self(batch["input_ids"], batch["attention_mask"]).float(), batch)

    # ------------------------------------------------------------- training
    def build_optimizer(self) -> torch.optim.AdamW:
        trainer = self._trainer
        return build_optimizer(self.model, self.hparams.optim, int(self.encoder.config.num_hidden_layers),
                               str(trainer.precision) if trainer else "32-true", trainer and trainer.gradient_clip_val)

    def configure_optimizers(self) -> dict[str, Any]:
        return optimizer_config(self.build_optimizer(), self.hparams.optim,
                                int(self.trainer.estimated_stepping_batches))

    def configure_callbacks(self) -> list[L.Callback]:
        freeze = int(self.hparams.optim.get("freeze_encoder_epochs", 0) or 0)
        callbacks = [token_throughput(), ExactResume(), *([FreezeEncoder(freeze)] if freeze > 0 else [])]
        # Lightning asks again for validate/test after fit: keep the ones it already holds
        present = {type(c) for c in self.trainer.callbacks}
        return [c for c in callbacks if type(c) not in present]

    # ---------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        add_extras(checkpoint, self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokenizer = read_extras(checkpoint) or self.tokenizer
