"""The LightningModule: BigBird encoder + attention backend + head."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import (
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from .attention import build_backend
from .encoder import build_encoder
from .errors import UserError
from .heads import build_head, head_class
from .tokenizer_io import tokenizer_from_files, tokenizer_to_files

NO_DECAY_KEYWORDS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")


class BigBirdClassifier(L.LightningModule):
    """Long-document classifier.

    Every constructor argument is a plain dict saved with ``save_hyperparameters``; together with
    the tokenizer files stored in the checkpoint, ``load_from_checkpoint(path)`` alone rebuilds the
    model, its head, its label names and its tokenizer.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        attention: Mapping[str, Any],
        head: Mapping[str, Any],
        optim: Mapping[str, Any],
        id2label: Mapping[int, str],
        encoder_config: Mapping[str, Any],
        problem_type: str = "single_label_classification",
        data: Mapping[str, Any] | None = None,
        init_weights_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if problem_type != "single_label_classification":
            raise UserError(
                f"model.problem_type={problem_type} is not supported yet; use single_label_classification"
            )
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.num_labels = len(self.id2label)
        attention_options = {k: v for k, v in attention.items() if k != "name"}
        self.backend = build_backend(
            attention["name"],
            block_size=int(model["block_size"]),
            num_random_blocks=int(model["num_random_blocks"]),
            **attention_options,
        )
        head_options = {k: v for k, v in head.items() if k != "name"}
        self.encoder = build_encoder(
            encoder_config, with_pooler=head_class(head["name"]).uses_pooler, init_weights_from=init_weights_from
        )
        self.backend.attach(self.encoder)
        if model.get("gradient_checkpointing"):
            self.encoder.gradient_checkpointing_enable()
        if head_options.get("activation") is None:
            # HF's classification head uses the encoder's activation; export parity depends on it
            head_options["activation"] = self.encoder.config.hidden_act
        self.head = build_head(head["name"], self.encoder.config.hidden_size, self.num_labels, **head_options)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=float(optim.get("label_smoothing", 0.0)))
        self.tokenizer: PreTrainedTokenizerBase | None = None

        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_labels, average="micro"),
                "f1": MulticlassF1Score(self.num_labels, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_f1_best = MaxMetric()

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask)
        return self.head(hidden, attention_mask, getattr(self.encoder, "pooler", None))

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss_fn(logits.float(), batch["labels"])
        return loss, logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        started = time.perf_counter()
        loss, _ = self._step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"]))
        # padding waste and throughput: real tokens / padded tokens; real tokens per second measured
        # from the previous batch's start to this one's (so it covers forward, backward and step)
        real_tokens = batch["attention_mask"].sum().float()
        self.log("train/pad_efficiency", real_tokens / batch["attention_mask"].numel(), batch_size=len(batch["labels"]))
        previous = getattr(self, "_previous_batch", None)
        if batch_idx > 0 and previous is not None:
            self.log("train/tokens_per_sec", previous[1] / (started - previous[0]), batch_size=len(batch["labels"]))
        self._previous_batch = (started, real_tokens.detach())
        return loss

    def on_train_start(self) -> None:
        # a sanity-check pass must not leave its values in the best-so-far trackers
        self.val_acc_best.reset()
        self.val_f1_best.reset()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.val_loss.update(loss, weight=len(batch["labels"]))
        self.val_metrics.update(logits, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.val_loss.reset()
        self.log_dict(values, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_acc_best.update(values["val/acc"])
            self.val_f1_best.update(values["val/f1"])
            self.log("val/acc_best", self.val_acc_best.compute())
            self.log("val/f1_best", self.val_f1_best.compute())

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.test_loss.update(loss, weight=len(batch["labels"]))
        self.test_metrics.update(logits, batch["labels"])

    def on_test_epoch_end(self) -> None:
        values = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log("test/loss", self.test_loss.compute())
        self.test_loss.reset()
        self.log_dict(values)

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        return {"row": batch["row"], "logits": logits, "probs": logits.softmax(-1)}

    # ------------------------------------------------------------- optimizers
    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.hparams.optim
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if any(k in name for k in NO_DECAY_KEYWORDS) else decay).append(param)
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(optim.get("weight_decay", 0.01))},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(optim["lr"]),
            betas=tuple(optim.get("betas", (0.9, 0.999))),
            eps=float(optim.get("eps", 1e-8)),
        )
        total_steps = int(self.trainer.estimated_stepping_batches)
        warmup_steps = int(float(optim.get("warmup_ratio", 0.1)) * total_steps)
        schedule = optim.get("scheduler", "linear")
        if schedule == "linear":
            scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
        elif schedule == "cosine":
            scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
        elif schedule == "constant":
            return {"optimizer": optimizer}
        else:
            raise UserError(f"unknown optim.scheduler '{schedule}'; use linear, cosine or constant")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the weights are in the state dict: reloading must not fetch the pretrained ones again
        checkpoint["hyper_parameters"]["init_weights_from"] = None
        if self.tokenizer is not None:
            checkpoint["tokenizer_files"] = tokenizer_to_files(self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer_files" in checkpoint:
            self.tokenizer = tokenizer_from_files(checkpoint["tokenizer_files"])

    @property
    def label2id(self) -> dict[str, int]:
        return {label: idx for idx, label in self.id2label.items()}
