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
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader
from transformers import DataCollatorForLanguageModeling

from ..attention import backend_class
from ..cli import route_lightning_logs_to_hydra
from ..data.sampler import LengthBucketBatchSampler
from ..errors import UserError
from ..inputs.documents import join_text_columns
from ..io_utils import write_json_atomic
from ..models.encoder import make_encoder_config
from ..models.masked_lm import MaskedLM
from ..models.tokenizer import resolve_tokenizer
from .train import run_wrapper

log = logging.getLogger(__name__)


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
                                  model_type=str(cfg.model.get("tokenizer_model_type") or "unigram"),
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
