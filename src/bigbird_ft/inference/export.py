"""Write ``hf_model/``: a folder that transformers alone can load.

With ``head=cls`` (one dense layer, HF's layout) the folder is a stock
``BigBirdForSequenceClassification``; ``AutoModelForSequenceClassification`` and
``pipeline("text-classification")`` return our label names. Other heads: the encoder via
``save_pretrained`` plus ``head.pt`` and ``bigbird_ft_head.json`` describing the head.
``onnx_length=N`` adds ``model.onnx``: the stock model at a fixed input length (any batch size).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import BigBirdConfig

from ..errors import UserError
from ..heads import head_class
from ..io_utils import atomic_dir
from ..models.checkpoints import find_checkpoint
from ..models.classifier import BigBirdClassifier
from ..models.factory import build_classifier, load_classifier
from ..tasks import default_task

#: a stock architecture in ``hf_model/config.json`` -> the head (and MLP depth) with its layout
STOCK_HEADS = {"BigBirdForSequenceClassification": {"name": "cls", "mlp_layers": 1},
               "BigBirdForTokenClassification": {"name": "token", "mlp_layers": 0},
               "BigBirdForQuestionAnswering": {"name": "span"}}


def export_config(module: BigBirdClassifier) -> BigBirdConfig:
    config = BigBirdConfig(**module.hparams.encoder_config)
    config.attention_type = "block_sparse" if module.backend.sparse else "original_full"
    config.id2label = dict(module.id2label)
    config.label2id = module.label2id
    config.num_labels = module.num_labels
    config.problem_type = module.task.hf_problem_type()
    layout = module.head.stock_layout()
    config.architectures = [layout[0] if layout else "BigBirdModel"]
    return config


def is_stock_exportable(module: BigBirdClassifier) -> bool:
    """The head has the layout of a stock transformers class (``Head.stock_layout``) and the network is
    encoder + head (``reader=hierarchical`` adds a document layer that no stock class has)."""
    return module.head.stock_layout() is not None and module.model.document_layer is None


def reader_notice(module: BigBirdClassifier) -> str | None:
    """What a stock pipeline on ``hf_model/`` does not do of the run's reader (one line), or None."""
    reader = module.inputs.reader
    if reader.name == "hierarchical":
        return ("export: reader=hierarchical has no stock transformers class; hf_model/ holds the encoder, head.pt "
                "and document_layer.pt: load it with bigbird_ft.load_exported or predict with predict.py")
    if reader.name in ("head_tail", "chunks"):
        return (f"export: a stock pipeline on hf_model/ reads the first {module.inputs.input_length} tokens of a "
                f"document; reader={reader.name} reads more: predict.py (or bigbird_ft.load_exported) applies it")
    return None


def folded_head_state(module: BigBirdClassifier) -> dict[str, torch.Tensor]:
    """The head's weights with the calibration temperature folded into its last layer.

    logits / T = (W x + b) / T = (W / T) x + b / T: transformers' stock model, which knows no
    temperature, then gives the calibrated probabilities.
    """
    state = dict(module.head.state_dict())
    temperature = module.model.temperature.detach()
    for name in ("mlp.out_proj.weight", "mlp.out_proj.bias"):
        if name in state:  # head=span has no temperature (question answering is not calibrated)
            state[name] = state[name] / temperature
    return state


def stock_state_dict(module: BigBirdClassifier) -> dict[str, torch.Tensor]:
    _, names = module.head.stock_layout()
    state = {f"bert.{k}": v for k, v in module.encoder.state_dict().items()}
    state.update({names[k]: v for k, v in folded_head_state(module).items()})
    return state


def check_onnx_length(module: BigBirdClassifier, config: BigBirdConfig, length: int) -> None:
    """Refuse, before anything is written, an ONNX export that would not match the model.

    The graph is full attention; a block-sparse model attends fully only up to the backend's
    min_sparse_length (HF's own switch), so it matches there and not beyond.
    """
    if not is_stock_exportable(module):
        raise UserError(f"ONNX export needs a stock head (head=cls with head.mlp_layers=1, or head=token with "
                        f"head.mlp_layers=0), this model has head={module.head.name}: drop onnx_length")
    if not 0 < length <= config.max_position_embeddings:
        raise UserError(f"onnx_length={length} must be in 1..{config.max_position_embeddings} "
                        "(max_position_embeddings): fix onnx_length")
    limit = module.backend.min_sparse_length()
    if config.attention_type != "original_full" and length > limit:
        raise UserError(f"onnx_length={length} exceeds {limit}, the longest input at which this block-sparse "
                        "model computes full attention, which is what the ONNX graph computes: lower onnx_length "
                        "or train with attention=hf_full|sdpa")


def write_onnx(hf_dir: Path, length: int, target: Path, architecture: str) -> None:
    """Trace the saved stock model with full attention; inputs are [batch, length] int64."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's dynamo exporter translates through it)
    except ImportError as err:
        raise UserError(f"ONNX export needs the onnx extra ({err.name} is missing): "
                        "pip install -e '.[onnx]', or drop onnx_length") from err
    # HF's block-sparse path draws its random blocks with NumPy, which cannot be traced; within
    # check_onnx_length's limit full attention gives the same outputs.
    model = getattr(transformers, architecture).from_pretrained(hf_dir, attention_type="original_full").eval()
    # Two distinct example tensors: given one tensor for both inputs, the exporter aliases them and
    # the graph reads input_ids as the mask (measured: logits off by 0.3).
    input_ids = torch.randint(0, model.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(2, length, dtype=torch.long)
    attention_mask[1, length // 2:] = 0
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model, (), str(target), kwargs={"input_ids": input_ids, "attention_mask": attention_mask},
        input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
        external_data=False, dynamo=True,
    )


def export_hf_model(module: BigBirdClassifier, out_dir: str | Path, onnx_length: int | None = None) -> Path:
    out_dir = Path(out_dir)
    config = export_config(module)
    notice = reader_notice(module)
    if notice:
        print(notice)
    if onnx_length is not None:
        check_onnx_length(module, config, onnx_length)
    # transformers draws a progress bar per saved shard: one line of noise at the end of every run
    transformers.utils.logging.disable_progress_bar()
    with atomic_dir(out_dir) as tmp:
        if is_stock_exportable(module):
            model = getattr(transformers, config.architectures[0])(config)
            missing, unexpected = model.load_state_dict(stock_state_dict(module), strict=False)
            # the stock model always has a pooler; ours has none unless head=pooler
            if unexpected or any(not k.startswith("bert.pooler.") for k in missing):
                raise RuntimeError(f"export mapping broke: missing={missing} unexpected={unexpected}")
            model.save_pretrained(tmp)
        else:
            config.architectures = ["BigBirdModel"]
            module.encoder.config.update(config.to_diff_dict())
            module.encoder.save_pretrained(tmp)
            torch.save(folded_head_state(module), tmp / "head.pt")
            (tmp / "bigbird_ft_head.json").write_text(
                json.dumps({"head": dict(module.hparams.head), "num_labels": module.num_labels}, indent=2))
        if module.model.document_layer is not None:
            torch.save(module.model.document_layer.state_dict(), tmp / "document_layer.pt")
        if module.inputs.reader.name != "sparse" or module.task.pair_input:
            # how the run read documents (question answering: its columns and answer length): load_exported
            # rebuilds the same reading from it
            (tmp / "bigbird_ft_inputs.json").write_text(json.dumps(module.inputs.to_hparams(), indent=2))
        if module.tokenizer is not None:
            module.tokenizer.save_pretrained(tmp)
        if onnx_length is not None:
            write_onnx(tmp, onnx_length, tmp / "model.onnx", config.architectures[0])
    return out_dir


def load_exported(path: str | Path) -> BigBirdClassifier:
    """Rebuild a BigBirdClassifier (with tokenizer and label names) from an ``hf_model/`` folder."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    config = BigBirdConfig.from_pretrained(path)
    head_file = path / "bigbird_ft_head.json"
    stock = not head_file.exists()
    architecture = (config.architectures or ["BigBirdForSequenceClassification"])[0]
    if stock:
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        head = {**STOCK_HEADS[architecture], "mlp_hidden_size": None, "activation": config.hidden_act,
                "dropout": dropout}
    else:
        spec = json.loads(head_file.read_text())
        # exports before 2026-12 wrote the name and the options apart
        head = spec["head"] if "head" in spec else {"name": spec["name"], **spec["options"]}
    backend = "hf_full" if config.attention_type == "original_full" else "hf_block_sparse"
    encoder_config = {k: v for k, v in config.to_dict().items()
                      if k not in ("id2label", "label2id", "architectures", "problem_type")}
    inputs_file = path / "bigbird_ft_inputs.json"
    data = json.loads(inputs_file.read_text()) if inputs_file.exists() else None
    module = build_classifier(
        model={"block_size": config.block_size, "num_random_blocks": config.num_random_blocks},
        attention={"name": backend},
        head=head,
        id2label={int(k): v for k, v in config.id2label.items()},
        encoder_config=encoder_config,
        problem_type=config.problem_type or default_task(head_class(head["name"]).per_token,
                                                         head_class(head["name"]).pair_input),
        data=data,
    )
    state = load_file(str(path / "model.safetensors"))
    if stock:
        encoder_state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
        ours = {theirs: name for name, theirs in module.head.stock_layout()[1].items()}
        head_state = {ours[k]: v for k, v in state.items() if k in ours}
    else:
        encoder_state = state
        head_state = torch.load(path / "head.pt", map_location="cpu", weights_only=True)
    if not module.head.uses_pooler:
        encoder_state = {k: v for k, v in encoder_state.items() if not k.startswith("pooler.")}
    module.encoder.load_state_dict(encoder_state)
    module.head.load_state_dict(head_state)
    if module.model.document_layer is not None:
        module.model.document_layer.load_state_dict(
            torch.load(path / "document_layer.pt", map_location="cpu", weights_only=True))
    module.tokenizer = AutoTokenizer.from_pretrained(path)
    return module.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m bigbird_ft.export ckpt_path=PATH out=DIR [onnx_length=N]``: export any checkpoint."""
    import sys

    from ..cli import compose_tool
    from ..errors import exit_on_user_error

    @exit_on_user_error
    def run(args: list[str]) -> None:
        cfg = compose_tool("export", args)
        target = str(cfg.out)  # read first: a missing one is named
        onnx_length = cfg.onnx_length
        if onnx_length is not None and (isinstance(onnx_length, bool) or not isinstance(onnx_length, int)):
            raise UserError(f"onnx_length={onnx_length} is not a whole number of tokens: fix onnx_length")
        out_dir = Path(target).expanduser()
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            # the folder is replaced as a whole (atomically): never a folder that holds anything else
            raise UserError(f"out={target} exists and is not empty; choose a new out= folder")
        checkpoint = find_checkpoint(cfg.get("run_dir"), cfg.get("ckpt_path"))
        print(f"Checkpoint: {checkpoint}")
        module = load_classifier(checkpoint)
        out = export_hf_model(module, target, onnx_length)
        print(f"Exported {checkpoint} to {out}")

    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
