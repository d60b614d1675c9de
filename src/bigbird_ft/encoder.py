"""Build the BigBird encoder config and weights from ``model.*`` keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, BigBirdConfig, BigBirdModel, PreTrainedTokenizerBase

from .errors import UserError


def make_encoder_config(
    model_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    hf_attention_type: str,
) -> dict[str, Any]:
    """The full BigBirdConfig as a dict: stored in the checkpoint so it alone rebuilds the model."""
    pretrained = model_cfg.get("pretrained")
    overrides = {
        "block_size": int(model_cfg["block_size"]),
        "num_random_blocks": int(model_cfg["num_random_blocks"]),
        "attention_type": hf_attention_type,
    }
    if pretrained:
        try:
            config = AutoConfig.from_pretrained(
                pretrained, trust_remote_code=bool(model_cfg.get("trust_remote_code", False))
            )
        except OSError as err:
            raise UserError(
                f"cannot load model config '{pretrained}' ({str(err).splitlines()[0]}); "
                "set model.pretrained to a local dir or a reachable hub name, or null for random init"
            ) from None
        if config.model_type != "big_bird":
            raise UserError(f"model.pretrained '{pretrained}' is a {config.model_type} model, not BigBird")
        values = config.to_dict()
        values.update({k: v for k, v in dict(model_cfg.get("config") or {}).items() if "dropout" in k})
    else:
        values = dict(model_cfg.get("config") or {})
        values.update(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
        )
    values.update(overrides)
    values.pop("architectures", None)
    values.pop("id2label", None)
    values.pop("label2id", None)
    return values


def build_encoder(
    encoder_config: Mapping[str, Any], with_pooler: bool, init_weights_from: str | None = None
) -> BigBirdModel:
    config = BigBirdConfig(**encoder_config)
    if init_weights_from:
        try:
            return BigBirdModel.from_pretrained(
                init_weights_from, config=config, add_pooling_layer=with_pooler
            )
        except OSError as err:
            raise UserError(
                f"cannot load weights '{init_weights_from}' ({str(err).splitlines()[0]}); "
                "set model.pretrained to a local dir or a reachable hub name"
            ) from None
    return BigBirdModel(config, add_pooling_layer=with_pooler)
