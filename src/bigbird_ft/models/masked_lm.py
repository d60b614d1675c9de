"""The masked-LM model of continued pretraining: encoder + attention backend + BigBird's MLM head.

The MLM head comes from the checkpoint where it has one (BERT's ``cls.predictions``, RoBERTa's
``lm_head``, BigBird's own); otherwise it starts fresh and its weights are learned (the decoder is
tied to the word embeddings, as in BERT). ``save_stock`` writes a stock ``BigBirdForMaskedLM`` folder
that ``model.pretrained=`` fine-tunes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BigBirdConfig, BigBirdForMaskedLM
from transformers.models.big_bird.modeling_big_bird import BigBirdOnlyMLMHead

from ..attention import build_backend
from ..errors import UserError
from ..io_utils import atomic_dir
from ..training.optim import build_optimizer, optimizer_config
from .encoder import build_encoder

IGNORED = -100


def source_mlm_head(name: str | None, trust_remote_code: bool = False) -> dict[str, torch.Tensor] | None:
    """The checkpoint's own MLM head in BigBird's names (``predictions.*``), or None if it has none."""
    if not name:
        return None
    from transformers import AutoModelForMaskedLM

    from .pretrained import resolve_pretrained

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
