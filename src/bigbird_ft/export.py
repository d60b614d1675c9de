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


def load_exported(path: str | Path) -> BigBirdClassifier:
    """Rebuild a BigBirdClassifier (with tokenizer and label names) from an ``hf_model/`` folder."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    config = BigBirdConfig.from_pretrained(path)
    head_file = path / "bigbird_ft_head.json"
    stock = not head_file.exists()
    if stock:
        head = {"name": "cls", "mlp_layers": 1, "mlp_hidden_size": None, "activation": config.hidden_act,
                "dropout": config.classifier_dropout if config.classifier_dropout is not None
                else config.hidden_dropout_prob}
    else:
        spec = json.loads(head_file.read_text())
        head = {"name": spec["name"], **spec["options"]}
    backend = "hf_full" if config.attention_type == "original_full" else "hf_block_sparse"
    encoder_config = {k: v for k, v in config.to_dict().items()
                      if k not in ("id2label", "label2id", "architectures", "problem_type")}
    module = BigBirdClassifier(
        model={"block_size": config.block_size, "num_random_blocks": config.num_random_blocks},
        attention={"name": backend},
        head=head,
        optim={"lr": 0.0},
        id2label={int(k): v for k, v in config.id2label.items()},
        encoder_config=encoder_config,
        problem_type=config.problem_type or "single_label_classification",
    )
    state = load_file(str(path / "model.safetensors"))
    if stock:
        encoder_state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
        head_state = {f"mlp.{k[len('classifier.'):]}": v for k, v in state.items() if k.startswith("classifier.")}
    else:
        encoder_state = state
        head_state = torch.load(path / "head.pt", map_location="cpu", weights_only=True)
    if not module.head.uses_pooler:
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith("pooler.")}
    module.encoder.load_state_dict(encoder_state)
    module.head.load_state_dict(head_state)
    module.tokenizer = AutoTokenizer.from_pretrained(path)
    return module.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m bigbird_ft.export ckpt_path=PATH out=DIR``: export any checkpoint after the fact."""
    import sys

    from .errors import UserError, exit_on_user_error

    @exit_on_user_error
    def run(args: list[str]) -> None:
        options = dict(arg.split("=", 1) for arg in args if "=" in arg)
        unknown = sorted(set(options) - {"ckpt_path", "out"}) + [a for a in args if "=" not in a]
        if unknown or "ckpt_path" not in options or "out" not in options:
            raise UserError(f"usage: python -m bigbird_ft.export ckpt_path=PATH out=DIR (got {' '.join(args)})")
        checkpoint = Path(options["ckpt_path"])
        if not checkpoint.is_file():
            raise UserError(f"checkpoint not found: {checkpoint}; fix ckpt_path")
        module = BigBirdClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
        out = export_hf_model(module, options["out"])
        print(f"Exported {checkpoint} to {out}")

    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
