"""The LightningModule: BigBird encoder + attention backend + head."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric, MetricCollection, MinMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef
from transformers import (
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from .attention import build_backend
from .encoder import build_encoder
from .errors import UserError
from .heads import build_head, head_class
from .plots import save_confusion_matrix
from .tokenizer_io import tokenizer_from_files, tokenizer_to_files

NO_DECAY_KEYWORDS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")
SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
#: metrics where lower is better; every other scalar metric gets a MaxMetric best-so-far tracker
LOWER_IS_BETTER = ("mse", "mae")
#: metric names logged twice, so `monitor: val/acc` / `val/f1` mean the same thing for every type
METRIC_ALIASES = {MULTI_LABEL: {"acc": "subset_acc", "f1": "f1_macro"}}
LAYER_PATTERN = re.compile(r"^encoder\.encoder\.layer\.(\d+)\.")


def build_metrics(problem_type: str, num_labels: int, threshold: float) -> MetricCollection:
    """The torchmetrics of one problem type (they sync themselves across DDP ranks on compute)."""
    if problem_type == MULTI_LABEL:
        return MetricCollection(
            {
                "subset_acc": MultilabelExactMatch(num_labels, threshold=threshold),
                "f1_micro": MultilabelF1Score(num_labels, threshold=threshold, average="micro"),
                "f1_macro": MultilabelF1Score(num_labels, threshold=threshold, average="macro"),
            }
        )
    if problem_type == REGRESSION:
        return MetricCollection(
            {
                "mse": MeanSquaredError(),
                "mae": MeanAbsoluteError(),
                "pearson": PearsonCorrCoef(),
                "spearman": SpearmanCorrCoef(),
            }
        )
    metrics: dict[str, Metric] = {
        "acc": MulticlassAccuracy(num_labels, average="micro"),
        "f1": MulticlassF1Score(num_labels, average="macro"),
        "f1_per_class": MulticlassF1Score(num_labels, average=None),
    }
    if num_labels == 2:
        # one-vs-rest AUROC of 2 classes = the binary AUROC of the positive class
        metrics["auroc"] = MulticlassAUROC(2, average="macro")
    return MetricCollection(metrics)


def metric_key(label: str) -> str:
    """A label name usable inside a logged metric name (no '/' nesting, no spaces)."""
    return re.sub(r"[/\s]+", "_", label)


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
        if problem_type not in PROBLEM_TYPES:
            raise UserError(f"unknown model.problem_type '{problem_type}'; use one of {', '.join(PROBLEM_TYPES)}")
        self.problem_type = problem_type
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.num_labels = len(self.id2label)
        if problem_type == REGRESSION and self.num_labels != 1:
            raise UserError(f"problem_type=regression needs one output, got id2label={self.id2label}")
        attention_options = {k: v for k, v in attention.items() if k != "name"}
        self.backend = build_backend(
            attention["name"],
            block_size=int(model["block_size"]),
            num_random_blocks=int(model["num_random_blocks"]),
            **attention_options,
        )
        head_options = {k: v for k, v in head.items() if k != "name"}
        self.encoder = build_encoder(
            encoder_config,
            with_pooler=head_class(head["name"]).uses_pooler,
            init_weights_from=init_weights_from,
            trust_remote_code=bool(model.get("trust_remote_code", False)),
        )
        self.backend.attach(self.encoder)
        if model.get("gradient_checkpointing"):
            self.encoder.gradient_checkpointing_enable()
        if head_options.get("activation") is None:
            # HF's classification head uses the encoder's activation; export parity depends on it
            head_options["activation"] = self.encoder.config.hidden_act
        self.head = build_head(head["name"], self.encoder.config.hidden_size, self.num_labels, **head_options)
        self.label_smoothing = float(optim.get("label_smoothing", 0.0) or 0.0)
        threshold = model.get("threshold")
        self.threshold = 0.5 if threshold is None else float(threshold)
        # non-persistent: the resolved values live in hparams, so old checkpoints load unchanged
        self.register_buffer("class_weights", self._loss_weights("class_weights", SINGLE_LABEL), persistent=False)
        self.register_buffer("pos_weight", self._loss_weights("pos_weight", MULTI_LABEL), persistent=False)
        self.freeze_encoder_epochs = int(optim.get("freeze_encoder_epochs", 0) or 0)
        self.tokenizer: PreTrainedTokenizerBase | None = None

        metrics = build_metrics(problem_type, self.num_labels, self.threshold)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        scalar_names = [n for n in metrics.keys(keep_base=True) if n != "f1_per_class"]
        scalar_names += list(METRIC_ALIASES.get(problem_type, {}))
        self.best_metrics = nn.ModuleDict(
            {name: MinMetric() if name in LOWER_IS_BETTER else MaxMetric() for name in scalar_names}
        )
        if problem_type == SINGLE_LABEL:
            self.val_confusion = MulticlassConfusionMatrix(self.num_labels)
            self.test_confusion = MulticlassConfusionMatrix(self.num_labels)
        else:
            self.val_confusion = self.test_confusion = None

    def _loss_weights(self, key: str, needed_by: str) -> torch.Tensor | None:
        """``model.class_weights`` / ``model.pos_weight`` as a tensor (train() resolves ``auto``)."""
        value = self.hparams.model.get(key)
        if value is None:
            return None
        if self.problem_type != needed_by:
            raise UserError(f"model.{key} applies to {needed_by} only; set model.{key}=null")
        if isinstance(value, str):
            raise UserError(f"model.{key}={value} must be resolved to a list before the model is built")
        weights = torch.tensor([float(v) for v in value])
        if weights.numel() != self.num_labels:
            raise UserError(
                f"model.{key} has {weights.numel()} values for {self.num_labels} labels "
                f"{list(self.id2label.values())}; fix model.{key}"
            )
        return weights

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask)
        return self.head(hidden, attention_mask, getattr(self.encoder, "pooler", None))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, BCE-with-logits or MSE by problem type, always in float32."""
        logits = logits.float()
        if self.problem_type == MULTI_LABEL:
            return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=self.pos_weight)
        if self.problem_type == REGRESSION:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what a user reads: class probabilities, per-label probabilities, or the value."""
        logits = logits.float()
        if self.problem_type == MULTI_LABEL:
            return logits.sigmoid()
        if self.problem_type == REGRESSION:
            return logits.squeeze(-1)
        return logits.softmax(-1)

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss(logits, batch["labels"])
        return loss, logits

    def _update_metrics(self, stage: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        preds = self.outputs(logits)
        targets = labels.long() if self.problem_type == MULTI_LABEL else labels
        getattr(self, f"{stage}_metrics").update(preds, targets)
        confusion = getattr(self, f"{stage}_confusion")
        if confusion is not None:
            confusion.update(preds, labels)

    def _compute_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Computed (rank-synced) values, per-class F1 spread into ``<stage>/f1_<label>``, aliases added."""
        collection = getattr(self, f"{stage}_metrics")
        values = dict(collection.compute())
        collection.reset()
        per_class = values.pop(f"{stage}/f1_per_class", None)
        if per_class is not None:
            for idx, name in sorted(self.id2label.items()):
                values[f"{stage}/f1_{metric_key(name)}"] = per_class[idx]
        for alias, source in METRIC_ALIASES.get(self.problem_type, {}).items():
            values[f"{stage}/{alias}"] = values[f"{stage}/{source}"]
        return values

    def _write_confusion(self, stage: str) -> None:
        """Compute on every rank (it syncs), draw on rank 0 only; the last validation overwrites."""
        confusion = getattr(self, f"{stage}_confusion")
        if confusion is None:
            return
        matrix = confusion.compute()
        confusion.reset()
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            labels = [self.id2label[i] for i in range(self.num_labels)]
            save_confusion_matrix(
                matrix.cpu(), labels, self.trainer.default_root_dir, stage, self.trainer.loggers, self.global_step
            )

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        started = time.perf_counter()
        loss, _ = self._step(batch)
        if not torch.isfinite(loss):
            # stop before the optimizer step writes NaN into the weights; checkpoints on disk stay good
            raise UserError(
                f"training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower optim.lr or set trainer.gradient_clip_val (the last good checkpoint is in checkpoints/)"
            )
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
        for tracker in self.best_metrics.values():
            tracker.reset()

    def on_train_epoch_start(self) -> None:
        # optim.freeze_encoder_epochs: train the new head alone first, then everything
        if self.freeze_encoder_epochs > 0:
            frozen = self.current_epoch < self.freeze_encoder_epochs
            self.encoder.requires_grad_(not frozen)
            if frozen or self.current_epoch == self.freeze_encoder_epochs:
                rank_zero_info(f"Epoch {self.current_epoch}: encoder {'frozen' if frozen else 'unfrozen'}")

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.val_loss.update(loss, weight=len(batch["labels"]))
        self._update_metrics("val", logits, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        values = self._compute_metrics("val")
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.val_loss.reset()
        headline = {k: v for k, v in values.items() if k in ("val/acc", "val/f1", "val/mse")}
        self.log_dict(headline, prog_bar=True)
        self.log_dict({k: v for k, v in values.items() if k not in headline})
        self._write_confusion("val")
        if not self.trainer.sanity_checking:
            for name, tracker in self.best_metrics.items():
                tracker.update(values[f"val/{name}"])
                self.log(f"val/{name}_best", tracker.compute())

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.test_loss.update(loss, weight=len(batch["labels"]))
        self._update_metrics("test", logits, batch["labels"])

    def on_test_epoch_end(self) -> None:
        values = self._compute_metrics("test")
        self.log("test/loss", self.test_loss.compute())
        self.test_loss.reset()
        self.log_dict(values)
        self._write_confusion("test")

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        return {"row": batch["row"], "logits": logits, "probs": self.outputs(logits)}

    # ------------------------------------------------------------- optimizers
    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: no decay on bias/LayerNorm, layer-wise LR decay, a separate head LR.

        With ``optim.layerwise_lr_decay=d`` and L encoder layers, layer i (0-based) gets lr*d^(L-i),
        the embeddings lr*d^(L+1), BigBird's pooler lr; the head gets ``optim.head_lr`` (else lr).
        """
        optim = self.hparams.optim
        lr = float(optim["lr"])
        head_lr = float(optim["head_lr"]) if optim.get("head_lr") is not None else lr
        decay = float(optim.get("layerwise_lr_decay") or 1.0)
        weight_decay = float(optim.get("weight_decay", 0.01))
        num_layers = int(self.encoder.config.num_hidden_layers)

        def scope(name: str) -> tuple[str, float]:
            if name.startswith("head."):
                return "head", head_lr
            if name.startswith("encoder.embeddings."):
                return "embeddings", lr * decay ** (num_layers + 1)
            match = LAYER_PATTERN.match(name)
            if match:
                layer = int(match.group(1))
                return f"layer_{layer}", lr * decay ** (num_layers - layer)
            return ("pooler" if name.startswith("encoder.") else "other"), lr

        groups: dict[str, dict[str, Any]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            group_name, group_lr = scope(name)
            no_decay = any(k in name for k in NO_DECAY_KEYWORDS)
            key = f"{group_name}/no_decay" if no_decay else group_name
            group = groups.setdefault(
                key, {"name": key, "params": [], "lr": group_lr, "weight_decay": 0.0 if no_decay else weight_decay}
            )
            group["params"].append(param)
        return list(groups.values())

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over ``parameter_groups``; fused kernel where torch has one (what HF Trainer picks).

        ``optim.fused=null`` means: fused when every parameter is a float tensor on CPU or CUDA and
        no mixed precision clips gradients (Lightning cannot clip before a fused step unscales them).
        One kernel launch per step instead of a loop over tensors (measured in bench/overhead.py).
        """
        optim = self.hparams.optim
        fused = optim.get("fused")
        trainer = self._trainer
        amp_clipping = bool(
            trainer is not None and str(trainer.precision).endswith("-mixed") and trainer.gradient_clip_val
        )
        if fused is None:
            fused = not amp_clipping and all(
                p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in self.parameters()
            )
        elif fused and amp_clipping:
            raise UserError(
                f"optim.fused=true cannot clip gradients under trainer.precision={trainer.precision}; "
                "set optim.fused=null or trainer.gradient_clip_val=null"
            )
        return torch.optim.AdamW(
            self.parameter_groups(),
            lr=float(optim["lr"]),
            betas=tuple(optim.get("betas", (0.9, 0.999))),
            eps=float(optim.get("eps", 1e-8)),
            fused=bool(fused),
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.hparams.optim
        optimizer = self.build_optimizer()
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
