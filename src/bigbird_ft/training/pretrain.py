"""``python pretrain.py ...``: continued masked-LM pretraining of a BigBird, converted or not.

Longformer and BigBird both continue MLM pretraining after copying a short model's position table
to the long length; this is that step, on the text column of any ``data=`` source (the train split;
its labels are not read), with any attention backend (our ``block_sparse`` by default). The loss is
measured on held-out documents masked once with a fixed seed, before and after training, and the
adapted model is saved as a stock ``BigBirdForMaskedLM`` folder (with its tokenizer) that
``model.pretrained=`` fine-tunes from. The MLM head comes from the checkpoint where it has one
(BERT's ``cls.predictions``, RoBERTa's ``lm_head``, BigBird's own); otherwise it starts fresh and
its weights are learned here (the decoder is tied to the word embeddings, as in BERT).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader
from transformers import BigBirdConfig, BigBirdForMaskedLM, DataCollatorForLanguageModeling
from transformers.models.big_bird.modeling_big_bird import BigBirdOnlyMLMHead

from ..attention import backend_class, build_backend
from ..cli import route_lightning_logs_to_hydra
from ..data.documents import join_text_columns
from ..data.sampler import LengthBucketBatchSampler
from ..errors import UserError
from ..io_utils import atomic_dir, write_json_atomic
from ..models.encoder import build_encoder, make_encoder_config
from ..models.tokenizer import resolve_tokenizer
from .optim import build_optimizer, optimizer_config
from .run import run_wrapper

log = logging.getLogger(__name__)
IGNORED = -100


def source_mlm_head(name: str | None, trust_remote_code: bool = False) -> dict[str, torch.Tensor] | None:
    """The checkpoint's own MLM head in BigBird's names (``predictions.*``), or None if it has none."""
    if not name:
        return None
    from transformers import AutoModelForMaskedLM

    from ..models.pretrained import resolve_pretrained

    try:
        source, info = AutoModelForMaskedLM.from_pretrained(resolve_pretrained(name), output_loading_info=True,
                                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    state = source.state_dict()
    renames = {"cls.predictions.": "predictions.",  # BERT, BigBird
               "lm_head.dense.": "predictions.transform.dense.", "lm_head.layer_norm.": "predictions.transform.LayerNorm.",
               "lm_head.bias": "predictions.bias"}  # RoBERTa / XLM-R
    head = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old) and "decoder" not in key:
                head[new + key[len(old):]] = value
    fresh = {k for k in info.get("missing_keys", []) if k.startswith(("cls.", "lm_head."))}
    return head if head and not fresh else None


class MaskedLMNetwork(nn.Module):
    """Encoder + backend + BigBird's MLM head, named like ``LongDocumentClassifier`` (``encoder.``,
    ``head.``) so the optimizer recipe's parameter groups apply unchanged."""

    def __init__(self, encoder: nn.Module, backend: Any, head: BigBirdOnlyMLMHead) -> None:
        super().__init__()
        self.encoder, self.backend, self.head = encoder, backend, head
        backend.attach(encoder)
        # tied, as transformers' _tied_weights_keys tie them inside BigBirdForMaskedLM: the decoder
        # to the word embeddings (as in BERT), its bias to the head's output bias
        head.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight
        head.predictions.decoder.bias = head.predictions.bias

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """MLM logits; with ``positions`` (a bool mask) only there: the decoder (hidden x vocabulary)
        is most of an MLM step's FLOPs, and only the ~15 % masked tokens need it."""
        hidden = self.backend.encode(self.encoder, input_ids, attention_mask)
        return self.head(hidden if positions is None else hidden[positions])


class MaskedLM(L.LightningModule):
    def __init__(self, model: Mapping[str, Any], attention: Mapping[str, Any], encoder_config: Mapping[str, Any],
                 optim: Mapping[str, Any], init_weights_from: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        trust = bool(model.get("trust_remote_code", False))
        backend = build_backend(**attention, block_size=int(encoder_config["block_size"]),
                                num_random_blocks=int(encoder_config["num_random_blocks"]))
        encoder = build_encoder(encoder_config, with_pooler=False, init_weights_from=init_weights_from,
                                trust_remote_code=trust)
        head = BigBirdOnlyMLMHead(encoder.config)
        pretrained_head = source_mlm_head(init_weights_from, trust)
        if pretrained_head is not None:
            head.load_state_dict(pretrained_head, strict=False)  # the decoder weight is tied below
        self.head_from_checkpoint = pretrained_head is not None
        self.model = MaskedLMNetwork(encoder, backend, head)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        masked = batch["labels"] != IGNORED
        logits = self.model(batch["input_ids"], batch["attention_mask"], positions=masked)
        # a sum over the masked tokens, not a mean: a batch that happens to mask none gives 0, not NaN
        return F.cross_entropy(logits.float(), batch["labels"][masked], reduction="sum") / masked.sum().clamp_min(1)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise UserError(f"MLM loss became {loss.item()} at step {self.global_step}; lower optim.lr")
        self.log("train/mlm_loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        # weighted by masked tokens: the mean over every masked token of the held-out set
        masked = int((batch["labels"] != IGNORED).sum())
        self.log("val/mlm_loss", self.loss(batch), batch_size=max(masked, 1), reduce_fx="mean")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.hparams.optim, int(self.model.encoder.config.num_hidden_layers),
                                    precision=str(self.trainer.precision),
                                    gradient_clip_val=self.trainer.gradient_clip_val)
        return optimizer_config(optimizer, self.hparams.optim, int(self.trainer.estimated_stepping_batches))

    def save_stock(self, out: Path, tokenizer: Any) -> Path:
        """A ``BigBirdForMaskedLM`` folder (bert.* + cls.*) with the tokenizer: ``model.pretrained=out``."""
        config = BigBirdConfig(**self.hparams.encoder_config)
        config.attention_type = "block_sparse" if self.model.backend.sparse else "original_full"
        config.architectures = ["BigBirdForMaskedLM"]
        stock = BigBirdForMaskedLM(config)
        state = {f"bert.{k}": v for k, v in self.model.encoder.state_dict().items()}
        state.update({f"cls.{k}": v for k, v in self.model.head.state_dict().items()})
        missing, unexpected = stock.load_state_dict(state, strict=False)
        # the stock class builds a pooler the MLM never used: it stays freshly initialised
        if unexpected or [k for k in missing if "decoder" not in k and not k.startswith("bert.pooler.")]:
            raise RuntimeError(f"MLM export mapping broke: missing={missing} unexpected={unexpected}")
        with atomic_dir(out) as tmp:
            stock.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return out


def document_texts(datamodule: Any) -> list[str]:
    """The text column(s) of the source's training documents (labels are not read)."""
    raw = datamodule.load_splits()
    train = raw["train"] if "train" in raw else None
    if train is None:
        raise UserError(f"{datamodule.describe_source()} has no train split; MLM reads its texts")
    missing = [c for c in datamodule.text_columns if c not in train.column_names]
    if missing:
        raise UserError(f"MLM needs text, but the column '{missing[0]}' is not in the train split of "
                        f"{datamodule.describe_source()} (columns: {', '.join(train.column_names)}); "
                        "set data.text_column")
    texts = [join_text_columns(row, datamodule.text_columns, datamodule.text_separator)
             for row in train.select_columns(datamodule.text_columns)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"MLM: every text of {datamodule.describe_source()} is empty; set data.text_column")
    return texts


def masked_batches(features: list[dict[str, Any]], collator: Any, batch_size: int, seed: int) -> list[dict]:
    """Held-out batches masked once with a fixed seed: the loss before and after sees the same masks."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [collator(features[i:i + batch_size]) for i in range(0, len(features), batch_size)]


def pretrain_from_train_config(cfg: DictConfig) -> float:
    """``python train.py task=mlm``, the former spelling: the same run, its keys read from ``task.*``."""
    rank_zero_info("task=mlm is deprecated: run python pretrain.py (the same keys under mlm.) instead")
    with open_dict(cfg):
        cfg.mlm = cfg.task
    return pretrain(cfg)


@run_wrapper
def pretrain(cfg: DictConfig) -> float:
    """What ``python pretrain.py`` does; returns the held-out MLM loss after training."""
    route_lightning_logs_to_hydra()
    task, output_dir = cfg.mlm, Path(cfg.paths.output_dir)
    probability = float(task.mlm_probability)
    if not 0 < probability < 1:
        raise UserError(f"mlm.mlm_probability={probability} must be in (0, 1): fix mlm.mlm_probability")
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    texts = document_texts(datamodule)
    held_out = int(task.eval_documents)
    if not 0 < held_out < len(texts):
        raise UserError(f"mlm.eval_documents={held_out} must be in 1..{len(texts) - 1} ({len(texts)} documents)")
    generator = torch.Generator().manual_seed(int(cfg.seed))
    order = torch.randperm(len(texts), generator=generator).tolist()
    train_texts, eval_texts = [texts[i] for i in order[held_out:]], [texts[i] for i in order[:held_out]]
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tokenizer = resolve_tokenizer(str(cfg.model.tokenizer), train_texts=train_texts,
                                  vocab_size=int(cfg.model.get("tokenizer_vocab_size", 8000)),
                                  cache_dir=cfg.paths.cache_dir,
                                  trust_remote_code=bool(cfg.model.get("trust_remote_code", False)))
    if tokenizer.mask_token_id is None:
        raise UserError(f"tokenizer '{cfg.model.tokenizer}' has no mask token; MLM needs one (model.tokenizer)")
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    backend = backend_class(attention["name"])
    encoder_config = make_encoder_config(model_cfg, tokenizer, backend.hf_attention_type)
    # the DataModule's own length and padding checks against the model (one owner of data.max_length)
    max_length = datamodule.connect(tokenizer, int(encoder_config["block_size"]),
                                    int(encoder_config["max_position_embeddings"]), block_aligned=backend.sparse).max_length
    module = MaskedLM(model_cfg, attention, encoder_config, OmegaConf.to_container(cfg.optim, resolve=True),
                      init_weights_from=model_cfg.get("pretrained"))
    tokenizer.model_max_length = int(encoder_config["max_position_embeddings"])
    rank_zero_info(f"MLM head: {'from the checkpoint' if module.head_from_checkpoint else 'fresh (none in the checkpoint)'}")
    block = int(encoder_config["block_size"])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, pad_to_multiple_of=block)

    def features(docs: list[str], length: int) -> list[dict[str, Any]]:
        return [{"input_ids": ids} for ids in tokenizer(docs, truncation=True, max_length=length)["input_ids"]]

    batch_size = int(cfg.data.batch_size)
    train_features = features(train_texts, max_length)
    sampler = LengthBucketBatchSampler([len(f["input_ids"]) for f in train_features], batch_size, seed=int(cfg.seed))
    train_loader = DataLoader(train_features, batch_sampler=sampler, collate_fn=collator)
    eval_lengths = sorted({max_length, *(int(n) for n in (task.get("eval_max_lengths") or []))})
    eval_loaders = {n: DataLoader(masked_batches(features(eval_texts, n), collator, int(cfg.data.eval_batch_size),
                                                 int(cfg.seed)), batch_size=None) for n in eval_lengths}
    # steps, not epochs: the budget of an adaptation run; the held-out loss is measured around fit
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, max_steps=int(task.max_steps), max_epochs=-1,
                                                 logger=False, enable_checkpointing=False, num_sanity_val_steps=0)

    def held_out_losses() -> dict[int, float]:
        return {n: float(trainer.validate(module, dataloaders=loader, verbose=False)[0]["val/mlm_loss"])
                for n, loader in eval_loaders.items()}

    before = held_out_losses()
    trainer.fit(module, train_dataloaders=train_loader)
    after = held_out_losses()
    report = {
        "mlm_loss_before": before[max_length], "mlm_loss_after": after[max_length],
        "relative_drop": 1 - after[max_length] / before[max_length],
        "by_length": {str(n): {"before": before[n], "after": after[n]} for n in eval_lengths},
        "steps": int(trainer.global_step), "max_length": max_length, "train_documents": len(train_texts),
        "eval_documents": held_out, "head_from_checkpoint": module.head_from_checkpoint,
        "attention": attention["name"], "pretrained": model_cfg.get("pretrained"),
    }
    write_report(output_dir, report, module, tokenizer, Path(str(task.out)))
    return report["mlm_loss_after"]


@rank_zero_only
def write_report(output_dir: Path, report: dict[str, Any], module: MaskedLM, tokenizer: Any, out: Path) -> None:
    module.save_stock(out, tokenizer)
    report["saved_to"] = str(out)
    write_json_atomic(output_dir / "mlm.json", report)
    write_json_atomic(output_dir / "metrics.json", {"val/mlm_loss_before": report["mlm_loss_before"],
                                                    "val/mlm_loss": report["mlm_loss_after"]})
    ppl = {k: round(math.exp(min(v, 50)), 2) for k, v in (("before", report["mlm_loss_before"]),
                                                           ("after", report["mlm_loss_after"]))}
    rank_zero_info(f"MLM loss at {report['max_length']} tokens: {report['mlm_loss_before']:.4f} -> "
                   f"{report['mlm_loss_after']:.4f} (perplexity {ppl['before']} -> {ppl['after']}) in "
                   f"{report['steps']} steps; saved {out} (model.pretrained={out})")
