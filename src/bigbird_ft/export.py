"""Write ``hf_model/``: a folder that transformers alone can load.

With ``head=cls`` (one dense layer, HF's layout) the folder is a stock
``BigBirdForSequenceClassification``; ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` return our label names. Other heads: the encoder via
``save_pretrained`` plus ``head.pt`` and ``bigbird_ft_head.json`` describing the head.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BigBirdConfig, BigBirdForSequenceClassification

from .io_utils import atomic_dir
from .module import BigBirdClassifier

FULL_ATTENTION_BACKENDS = ("hf_full", "sdpa")


def export_config(module: BigBirdClassifier) -> BigBirdConfig:
    config = BigBirdConfig(**module.hparams.encoder_config)
    config.attention_type = (
        "original_full" if module.backend.name in FULL_ATTENTION_BACKENDS else "block_sparse"
    )
    config.id2label = dict(module.id2label)
    config.label2id = module.label2id
    config.num_labels = module.num_labels
    config.problem_type = module.hparams.problem_type
    config.architectures = ["BigBirdForSequenceClassification"]
    return config


def is_stock_exportable(module: BigBirdClassifier) -> bool:
    mlp = module.head.mlp
    return (
        module.head.name == "cls"
        and mlp.dense is not None
        and len(mlp.extra_dense) == 0
        and mlp.dense.out_features == mlp.dense.in_features
    )


def stock_state_dict(module: BigBirdClassifier) -> dict[str, torch.Tensor]:
    state = {f"bert.{k}": v for k, v in module.encoder.state_dict().items()}
    mlp = module.head.mlp
    for name in ("dense", "out_proj"):
        layer = getattr(mlp, name)
        state[f"classifier.{name}.weight"] = layer.weight
        state[f"classifier.{name}.bias"] = layer.bias
    return state


def export_hf_model(module: BigBirdClassifier, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    config = export_config(module)
    with atomic_dir(out_dir) as tmp:
        if is_stock_exportable(module):
            model = BigBirdForSequenceClassification(config)
            missing, unexpected = model.load_state_dict(stock_state_dict(module), strict=False)
            # the stock model always has a pooler; ours has none unless head=pooler
            if unexpected or any(not k.startswith("bert.pooler.") for k in missing):
                raise RuntimeError(f"export mapping broke: missing={missing} unexpected={unexpected}")
            model.save_pretrained(tmp)
        else:
            config.architectures = ["BigBirdModel"]
            module.encoder.config.update(config.to_diff_dict())
            module.encoder.save_pretrained(tmp)
            torch.save(module.head.state_dict(), tmp / "head.pt")
            head_options = {k: v for k, v in module.hparams.head.items() if k != "name"}
            (tmp / "bigbird_ft_head.json").write_text(
                json.dumps({"name": module.head.name, "options": head_options, "num_labels": module.num_labels},
                           indent=2)
            )
        if module.tokenizer is not None:
            module.tokenizer.save_pretrained(tmp)
    return out_dir
