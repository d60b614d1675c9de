"""Build the BigBird encoder config and weights from ``model.*`` keys.

``model.pretrained`` may name a BigBird checkpoint (loaded as it is) or a BERT / RoBERTa / XLM-R
one, which ``convert`` maps onto BigBird with its position table extended to
``model.max_position_embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import BigBirdConfig, BigBirdModel, PreTrainedTokenizerBase

from .convert import bigbird_config_values, check_convertible, converted_encoder
from .pretrained import check_tokenizer_fits, load_config, load_weights

DEFAULT_CONVERTED_LENGTH = 4096
#: HF's gelu_new (BigBird's default activation) is five elementwise ops with their temporaries;
#: gelu_pytorch_tanh is the same tanh approximation in one fused kernel (transformers' own name
#: for it). Measured at hidden 256 x 4 layers, n = 4,096, CPU: a training step 2.12 -> 1.63 s and
#: its peak memory 1,154 -> 725 MiB (bench/results/attention_fused_gelu.json)
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


def make_encoder_config(
    model_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    hf_attention_type: str,
) -> dict[str, Any]:
    """The full BigBirdConfig as a dict: stored in the checkpoint so it alone rebuilds the model."""
    pretrained = model_cfg.get("pretrained")
    block_size = int(model_cfg["block_size"])
    num_random_blocks = int(model_cfg["num_random_blocks"])
    overrides = {"block_size": block_size, "num_random_blocks": num_random_blocks, "attention_type": hf_attention_type}
    if pretrained:
        config = load_config(str(pretrained), bool(model_cfg.get("trust_remote_code", False)))
        check_convertible(config, str(pretrained))
        if config.model_type == "big_bird":
            values = config.to_dict()
        else:
            length = int(model_cfg.get("max_position_embeddings") or DEFAULT_CONVERTED_LENGTH)
            values = bigbird_config_values(config, length, block_size, num_random_blocks, hf_attention_type)
        # dropout as pretrained unless a model.config.*dropout* key is set (null: keep the checkpoint's)
        values.update({k: v for k, v in dict(model_cfg.get("config") or {}).items() if "dropout" in k and v is not None})
        check_tokenizer_fits(tokenizer, int(values["vocab_size"]))
        if values.get("sep_token_id") is None:
            # a converted BERT config names no [SEP]: question answering finds the question's end by it
            values["sep_token_id"] = tokenizer.sep_token_id
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
    act = values.get("hidden_act", BigBirdConfig().hidden_act)
    values["hidden_act"] = FUSED_ACTIVATIONS.get(act, act)
    for key in ("architectures", "id2label", "label2id", "_name_or_path", "transformers_version"):
        values.pop(key, None)
    return values


def build_encoder(
    encoder_config: Mapping[str, Any],
    with_pooler: bool,
    init_weights_from: str | None = None,
    trust_remote_code: bool = False,
) -> BigBirdModel:
    """The encoder in train mode whatever its source: ``from_pretrained`` hands models back in eval mode,
    and Lightning keeps each submodule's mode at fit start, so a loaded folder would fine-tune with
    dropout off (Lightning only warns "Found N module(s) in eval mode")."""
    config = BigBirdConfig(**encoder_config)
    if not init_weights_from:
        encoder = BigBirdModel(config, add_pooling_layer=with_pooler)
    elif load_config(init_weights_from, trust_remote_code).model_type != "big_bird":
        encoder = converted_encoder(init_weights_from, config, with_pooler, trust_remote_code)
    else:
        encoder = load_weights(BigBirdModel, init_weights_from, config=config, add_pooling_layer=with_pooler)
    return encoder.train()
