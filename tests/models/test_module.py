"""Checkpoint round trip and the stock HF export."""

import lightning as L
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from bigbird_ft.inference.export import export_hf_model
from bigbird_ft.models.classifier import BigBirdClassifier


def encode(tokenizer, texts, multiple=16):
    from bigbird_ft.inputs.collate import BlockPaddingCollator

    feats = [{"input_ids": ids} for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    return BlockPaddingCollator(tokenizer, multiple)(feats)


TEXTS = ["movx kifagomx " * 20, "ritix kipx nat tun " * 60, "vasodax " * 5]


def save_checkpoint(module, path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_epochs=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)


@pytest.mark.parametrize("head", ["cls", "attention"])
def test_load_from_checkpoint_alone_rebuilds_everything(make_classifier, tmp_path, head):
    module = make_classifier(head=head).eval()
    path = tmp_path / "model.ckpt"
    save_checkpoint(module, path)
    restored = BigBirdClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert restored.id2label == module.id2label
    assert restored.head.name == head and restored.backend.name == module.backend.name
    assert restored.tokenizer is not None
    assert restored.tokenizer(TEXTS)["input_ids"] == module.tokenizer(TEXTS)["input_ids"]
    batch = encode(module.tokenizer, TEXTS)
    with torch.no_grad():
        expected = module(batch["input_ids"], batch["attention_mask"])
        got = restored(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(expected, got)


def test_checkpoint_does_not_refetch_pretrained_weights(make_classifier, tmp_path):
    module = make_classifier()
    module.hparams.init_weights_from = "google/bigbird-roberta-base"  # as after a pretrained run
    path = tmp_path / "model.ckpt"
    save_checkpoint(module, path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["init_weights_from"] is None
    BigBirdClassifier.load_from_checkpoint(path, map_location="cpu")  # offline: would fail on a fetch


@pytest.mark.parametrize("attention", ["hf_block_sparse", "hf_full"])
def test_cls_export_is_a_stock_hf_model_with_label_names(make_classifier, tmp_path, attention):
    module = make_classifier(attention=attention).eval()
    out = export_hf_model(module, tmp_path / "hf_model")
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == "BigBirdForSequenceClassification"
    assert model.config.id2label == module.id2label
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = encode(tokenizer, TEXTS)
    with torch.no_grad():
        ours = module(batch["input_ids"], batch["attention_mask"])
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    classify = pipeline("text-classification", model=str(out), tokenizer=str(out), device="cpu")
    result = classify(TEXTS[1])[0]
    assert result["label"] in module.id2label.values()
    expected = ours[1].softmax(-1)
    assert result["label"] == module.id2label[int(expected.argmax())]
    assert abs(result["score"] - float(expected.max())) < 1e-5


def test_non_cls_head_exports_encoder_and_head_files(make_classifier, tmp_path):
    module = make_classifier(head="mean")
    out = export_hf_model(module, tmp_path / "hf_model")
    assert (out / "config.json").exists() and (out / "head.pt").exists()
    assert (out / "bigbird_ft_head.json").exists() and (out / "tokenizer.json").exists()


@pytest.mark.parametrize("head", ["cls", "attention", "pooler"])
def test_load_exported_gives_the_same_logits(make_classifier, tmp_path, head):
    from bigbird_ft.inference.export import load_exported

    module = make_classifier(head=head).eval()
    out = export_hf_model(module, tmp_path / "hf_model")
    restored = load_exported(out)
    assert restored.id2label == module.id2label and restored.head.name == head
    batch = encode(restored.tokenizer, TEXTS)
    with torch.no_grad():
        assert torch.allclose(module(batch["input_ids"], batch["attention_mask"]),
                              restored(batch["input_ids"], batch["attention_mask"]), atol=1e-6)


def test_export_cli_exports_a_checkpoint(make_classifier, tmp_path):
    import subprocess
    import sys

    def run_script(_: str, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bigbird_ft.export", *args], capture_output=True, text=True)

    module = make_classifier()
    save_checkpoint(module, tmp_path / "m.ckpt")
    result = run_script("export", [f"ckpt_path={tmp_path / 'm.ckpt'}", f"out={tmp_path / 'x'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "x" / "config.json").exists()
    bad = run_script("export", [f"ckpt_path={tmp_path / 'missing.ckpt'}", "out=y"])
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}; fix ckpt_path (a .ckpt file or a train run dir)"]


def test_non_finite_loss_stops_with_the_step(make_classifier, monkeypatch):
    from bigbird_ft.errors import UserError

    module = make_classifier()
    batch = encode(module.tokenizer, TEXTS)
    batch["labels"] = torch.tensor([0, 1, 2])
    monkeypatch.setattr(module, "loss", lambda logits, labels: logits.sum() * float("nan"))
    with pytest.raises(UserError, match=r"training loss became nan at step 0 .*optim.lr"):
        module.training_step(batch, 0)
