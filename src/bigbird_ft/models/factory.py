"""The one place a classifier is made: training, export, the benches and the tests all call it.

``load_from_checkpoint`` rebuilds one from its saved hyperparameters instead, which are exactly
the arguments this function hands on.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..attention import backend_class
from ..errors import UserError
from ..tasks import DEFAULT_TASK
from .classifier import BigBirdClassifier
from .encoder import make_encoder_config
from .tokenizer import resolve_tokenizer


def build_classifier(
    model: Mapping[str, Any],
    attention: Mapping[str, Any],
    head: Mapping[str, Any],
    id2label: Mapping[int, str],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    encoder_config: Mapping[str, Any] | None = None,
    problem_type: str = DEFAULT_TASK,
    optim: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> BigBirdClassifier:
    """``model``/``attention``/``head`` config dicts -> a classifier carrying ``tokenizer``.

    The encoder config comes from ``model.*`` and the tokenizer (``make_encoder_config``) unless one
    is given (an exported ``hf_model/`` has its own). ``model.pretrained`` loads or converts weights.
    """
    if encoder_config is None:
        if tokenizer is None:
            raise ValueError("build_classifier needs a tokenizer or an encoder_config")
        encoder_config = make_encoder_config(model, tokenizer, backend_class(attention["name"]).hf_attention_type)
    module = BigBirdClassifier(
        model=dict(model),
        attention=dict(attention),
        head=dict(head),
        optim=dict(optim or {"lr": 0.0}),
        id2label=dict(id2label),
        encoder_config=dict(encoder_config),
        problem_type=problem_type,
        data=dict(data) if data is not None else None,
        init_weights_from=model.get("pretrained"),
    )
    if tokenizer is not None:
        # a converted BERT's tokenizer says 512: its limit is now the encoder's (stored in hf_model/ too)
        tokenizer.model_max_length = int(encoder_config["max_position_embeddings"])
        module.tokenizer = tokenizer
    return module


def load_classifier(path: str | Path, key: str = "ckpt_path") -> BigBirdClassifier:
    """A classifier from a checkpoint file alone, with ``weights_only`` unpickling: a checkpoint may
    come from anywhere, and ours hold only tensors and plain values. Anything else is one line."""
    try:
        return BigBirdClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = found.group(1) if found else "not a tensor"
        raise UserError(
            f"{path} holds a pickled Python object ({what}), not only tensors and plain values; refusing "
            f"to load it (weights_only); fix {key} or re-save the checkpoint without it"
        ) from None


def classifier_for_data(model: Mapping[str, Any], attention: Mapping[str, Any], head: Mapping[str, Any],
                        optim: Mapping[str, Any], datamodule: Any, cache_dir: str,
                        reader: Mapping[str, Any] | None = None) -> BigBirdClassifier:
    """A new classifier for a prepared DataModule: its tokenizer (the encoder's own, or one fitted on the
    training texts), the loss weights its labels give, and the DataModule connected to the model (the
    ``InputSpec`` the checkpoint stores for predict; ``reader``: the ``reader.*`` keys)."""
    tokenizer = resolve_tokenizer(str(model["tokenizer"]), train_texts=datamodule.train_texts, cache_dir=cache_dir,
                                  vocab_size=int(model.get("tokenizer_vocab_size") or 8000),
                                  model_type=str(model.get("tokenizer_model_type") or "unigram"),
                                  trust_remote_code=bool(model.get("trust_remote_code", False)))
    model = datamodule.task.resolve_weights(model, datamodule.train_labels, datamodule.label2id)
    backend = backend_class(attention["name"])
    encoder_config = make_encoder_config(model, tokenizer, backend.hf_attention_type)
    inputs = datamodule.connect(tokenizer, int(encoder_config["block_size"]),
                                int(encoder_config["max_position_embeddings"]), block_aligned=backend.sparse,
                                reader=reader)
    return build_classifier(model=model, attention=attention, head=head, id2label=datamodule.id2label,
                            tokenizer=tokenizer, encoder_config=encoder_config, problem_type=datamodule.problem_type,
                            optim=optim, data=inputs.to_hparams())


def checkpoint_for_data(path: str | Path, datamodule: Any) -> BigBirdClassifier:
    """A checkpoint to evaluate on a prepared DataModule with the same labels, read as it was trained."""
    module = load_classifier(path)
    if module.id2label != datamodule.id2label:
        raise UserError(f"the checkpoint's labels {sorted(module.id2label.values())} differ from the data's "
                        f"{datamodule.label_names}; evaluate on the data it was trained on (data=...)")
    config = module.hparams.encoder_config
    datamodule.connect(module.tokenizer, int(config["block_size"]), int(config["max_position_embeddings"]),
                       block_aligned=module.backend.sparse, reader=module.inputs.reader)
    return module
