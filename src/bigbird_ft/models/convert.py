"""Warm-start BigBird from a BERT / RoBERTa / XLM-R checkpoint.

BigBird's encoder layer is BERT's layer with a different attention *pattern*, not different
parameters, so a BERT-family checkpoint maps one to one onto ``BigBirdModel`` (only BERT's
``pooler.dense`` is BigBird's ``pooler``). What a short encoder lacks is positions: as in the
BigBird paper (which warm-starts from RoBERTa), the source's learned position table is copied
until it covers ``max_position_embeddings``. RoBERTa-style models number positions from
``padding_idx + 1``; BigBird from 0, so those reserved rows are dropped and token i keeps the
vector the source gave token i. transformers has no such converter, hence this module.

``python -m bigbird_ft.convert src=DIR|NAME out=DIR [max_position_embeddings=4096 block_size=64
num_random_blocks=3]`` writes a stock BigBird folder (config, safetensors, tokenizer).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    BigBirdConfig,
    BigBirdModel,
)

from ..errors import UserError, exit_on_user_error
from ..io_utils import atomic_dir
from .pretrained import check_tokenizer_fits, load_config, load_tokenizer, load_weights

#: source model_type -> number of reserved rows before position 0 in its position table
POSITION_OFFSETS = {"bert": 0, "roberta": 2, "xlm-roberta": 2, "camembert": 2}
#: BigBirdConfig keys copied from the source config as they are
SHARED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def check_convertible(config: Any, name: str, key: str = "model.pretrained") -> None:
    """BERT-family encoders with absolute positions only; everything else is one line naming the key."""
    model_type = config.model_type
    if model_type == "big_bird":
        return
    if model_type not in POSITION_OFFSETS:
        raise UserError(
            f"{key} '{name}' is a {model_type} model; only BigBird and BERT/RoBERTa/XLM-R encoders "
            f"({', '.join(sorted(POSITION_OFFSETS))}) can be used; fix {key}"
        )
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UserError(
            f"{key} '{name}' uses position_embedding_type={position_type}; only absolute position "
            f"tables can be extended to BigBird's length; fix {key}"
        )


def bigbird_config_values(
    source: Any,
    max_position_embeddings: int,
    block_size: int,
    num_random_blocks: int,
    attention_type: str = "block_sparse",
) -> dict[str, Any]:
    """The BigBirdConfig of the converted encoder, as a dict."""
    if max_position_embeddings % block_size != 0:
        raise UserError(
            f"model.max_position_embeddings={max_position_embeddings} is not a multiple of "
            f"model.block_size={block_size}; fix model.max_position_embeddings"
        )
    values = {key: getattr(source, key) for key in SHARED_CONFIG_KEYS if getattr(source, key, None) is not None}
    values.update(
        max_position_embeddings=int(max_position_embeddings),
        block_size=int(block_size),
        num_random_blocks=int(num_random_blocks),
        attention_type=attention_type,
        rescale_embeddings=False,  # BERT does not scale word embeddings by sqrt(hidden)
        use_bias=True,
        sep_token_id=getattr(source, "sep_token_id", None) or getattr(source, "eos_token_id", None),
    )
    values.setdefault("bos_token_id", None)
    values.setdefault("eos_token_id", None)
    return values


def extend_positions(table: torch.Tensor, offset: int, length: int) -> torch.Tensor:
    """Source rows [offset:] tiled until ``length`` rows (the BigBird paper's copy initialisation)."""
    usable = table[offset:]
    if usable.shape[0] == 0:
        raise UserError("the source model has no usable position rows; fix model.pretrained")
    repeats = -(-length // usable.shape[0])
    return usable.repeat(repeats, 1)[:length].clone()


def convert_state_dict(
    source_state: Mapping[str, torch.Tensor], model_type: str, max_position_embeddings: int
) -> dict[str, torch.Tensor]:
    """BERT-layout keys (base model, no ``bert.`` prefix) -> BigBirdModel keys."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in source_state.items():
        if key.endswith("position_ids") or key.endswith("token_type_ids"):
            continue  # buffers BigBird rebuilds itself
        if key.startswith("pooler.dense."):
            key = "pooler." + key[len("pooler.dense.") :]
        if key == "embeddings.position_embeddings.weight":
            value = extend_positions(value, POSITION_OFFSETS[model_type], max_position_embeddings)
        converted[key] = value
    return converted


def converted_encoder(
    name: str, config: BigBirdConfig, with_pooler: bool, trust_remote_code: bool = False, key: str = "model.pretrained"
) -> BigBirdModel:
    """A BigBirdModel carrying the weights of the BERT-family checkpoint ``name`` (already checked
    by ``check_convertible`` when its config was read)."""
    source = load_weights(AutoModel, name, key, trust_remote_code=trust_remote_code)
    state = convert_state_dict(source.state_dict(), source.config.model_type, int(config.max_position_embeddings))
    encoder = BigBirdModel(config, add_pooling_layer=with_pooler)
    if not with_pooler:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    # a source saved without its pooler leaves BigBird's freshly initialised one: that is fine
    missing = [k for k in missing if not k.startswith("pooler.")]
    if missing or unexpected:
        raise UserError(
            f"{key} '{name}' does not map onto BigBird (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); fix {key}"
        )
    return encoder


def convert(
    src: str,
    out: str | Path,
    max_position_embeddings: int = 4096,
    block_size: int = 64,
    num_random_blocks: int = 3,
    trust_remote_code: bool = False,
) -> Path:
    """Write a stock BigBird folder converted from ``src``; refuses a non-empty ``out``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"out={out} exists and is not empty; choose a new out= folder")
    source_config = load_config(src, trust_remote_code, key="src")
    check_convertible(source_config, src, key="src")
    if source_config.model_type == "big_bird":
        raise UserError(f"src={src} is already a BigBird model; nothing to convert")
    config = BigBirdConfig(
        **bigbird_config_values(source_config, max_position_embeddings, block_size, num_random_blocks)
    )
    tokenizer = load_tokenizer(src, max_position_embeddings, trust_remote_code, key="src")
    check_tokenizer_fits(tokenizer, config.vocab_size, key="src")
    encoder = converted_encoder(src, config, with_pooler=True, trust_remote_code=trust_remote_code, key="src")
    with atomic_dir(out) as tmp:
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from ..cli import compose_tool

    args = compose_tool("convert", sys.argv[1:] if argv is None else argv)
    out = convert(
        str(args.src),
        str(args.out),
        max_position_embeddings=int(args.max_position_embeddings),
        block_size=int(args.block_size),
        num_random_blocks=int(args.num_random_blocks),
        trust_remote_code=bool(args.trust_remote_code),
    )
    print(f"Converted {args.src} -> {out}")


if __name__ == "__main__":
    main()
