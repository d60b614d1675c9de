"""Every module trains in train mode, whatever the encoder came from.

``from_pretrained`` returns models in eval mode and Lightning keeps each submodule's mode at fit
start, so an encoder loaded from a folder fine-tuned with dropout off ("Found 105 module(s) in eval
mode"). One case per source: random init, the packaged MiniLM, a converted folder, a BigBird folder
and the output of continued MLM pretraining.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import BertConfig, BertModel, BigBirdConfig, BigBirdForMaskedLM, BigBirdModel

from bigbird_ft.inputs.collate import BlockPaddingCollator
from bigbird_ft.models.convert import convert
from bigbird_ft.models.factory import build_classifier
from tests.conftest import TINY_MODEL
from tests.models.test_convert import MINILM, minilm_tokenizer_dir

TINY_BIGBIRD = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=512, block_size=16, num_random_blocks=2)


def bigbird_folder(folder: Path, tokenizer, model_class) -> Path:
    config = BigBirdConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_BIGBIRD)
    model_class(config).eval().save_pretrained(folder)  # saved from eval mode, as a trained model would be
    tokenizer.save_pretrained(folder)
    return folder


def source_folder(kind: str, tmp_path: Path, tokenizer) -> tuple[str | None, object]:
    """(model.pretrained, the tokenizer to train with) for one kind of source."""
    if kind == "scratch":
        return None, tokenizer
    if kind == "package":
        minilm_tokenizer_dir()
        return MINILM, None
    if kind == "converted":
        bert = tmp_path / "bert"
        BertModel(BertConfig(vocab_size=len(tokenizer), max_position_embeddings=128, hidden_size=32,
                             num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)).eval().save_pretrained(bert)
        tokenizer.save_pretrained(bert)
        return str(convert(str(bert), tmp_path / "converted", max_position_embeddings=512, block_size=16,
                           num_random_blocks=2)), None
    if kind == "bigbird":
        return str(bigbird_folder(tmp_path / "bigbird", tokenizer, BigBirdModel)), None
    if kind == "mlm_output":
        return str(bigbird_folder(tmp_path / "mlm", tokenizer, BigBirdForMaskedLM)), None
    raise ValueError(kind)


class RecordEvalModules(L.Callback):
    """The names of the modules in eval mode at each training step."""

    def __init__(self) -> None:
        self.in_eval: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.in_eval.append([name for name, m in pl_module.named_modules() if not m.training])


@pytest.mark.parametrize("kind", ["scratch", "package", "converted", "bigbird", "mlm_output"])
def test_every_module_trains_in_train_mode(kind, tmp_path, tiny_tokenizer):
    from transformers import AutoTokenizer

    pretrained, tokenizer = source_folder(kind, tmp_path, tiny_tokenizer)
    if tokenizer is None:
        from bigbird_ft.models.pretrained import resolve_pretrained

        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(pretrained))
    model = copy.deepcopy(TINY_MODEL)
    model.update(pretrained=pretrained, max_position_embeddings=512)
    module = build_classifier(model=model, attention={"name": "block_sparse"}, head={"name": "mean"},
                              id2label={0: "a", 1: "b"}, tokenizer=tokenizer, optim={"lr": 1e-4})
    texts = ["a short document about nothing much"] * 4
    features = [{"input_ids": ids, "labels": i % 2} for i, ids in enumerate(tokenizer(texts)["input_ids"])]
    loader = torch.utils.data.DataLoader(features, batch_size=2, collate_fn=BlockPaddingCollator(tokenizer, 16))
    recorder = RecordEvalModules()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=loader)
    assert len(recorder.in_eval) == 2
    assert recorder.in_eval == [[], []], f"{kind}: modules in eval mode during fit: {recorder.in_eval[0][:5]}"
