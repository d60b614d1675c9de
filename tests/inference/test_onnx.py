"""Issue 7 stretch: ONNX export of the head=cls model at a fixed length, checked with onnxruntime."""

import subprocess
import sys

import numpy as np
import torch

from tests.conftest import require_module
from tests.models.test_module import TEXTS, save_checkpoint

ort = require_module("onnxruntime", "the onnx extra is not installed (make setup installs it)")


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bigbird_ft.export", *args], capture_output=True, text=True)


def test_onnx_export_matches_the_model_and_the_stock_export(make_classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bigbird_ft.inference.export import main

    length = 128  # the tiny block-sparse model (block 16, r=2) computes full attention up to 144
    module = make_classifier(attention="hf_block_sparse", head="cls").eval()
    save_checkpoint(module, tmp_path / "m.ckpt")
    main([f"ckpt_path={tmp_path / 'm.ckpt'}", f"out={tmp_path / 'hf'}", f"onnx_length={length}"])
    out = tmp_path / "hf"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == [("batch", length)] * 2

    tokenizer = AutoTokenizer.from_pretrained(out)
    # three rows (the export traced two), one of them mostly padding
    enc = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    assert enc["attention_mask"][2].sum() < length // 4
    onnx_logits = session.run(["logits"], {"input_ids": enc["input_ids"].astype(np.int64),
                                           "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
    ids, mask = torch.from_numpy(enc["input_ids"]).long(), torch.from_numpy(enc["attention_mask"]).long()
    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        ours = module(ids, mask).numpy()
        theirs = stock(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(onnx_logits, ours, atol=1e-5)
    np.testing.assert_allclose(onnx_logits, theirs, atol=1e-5)
    assert [stock.config.id2label[int(i)] for i in onnx_logits.argmax(-1)] == [
        module.id2label[int(i)] for i in ours.argmax(-1)]


def test_onnx_export_refuses_what_it_cannot_reproduce(make_classifier, tmp_path):
    save_checkpoint(make_classifier(attention="hf_block_sparse"), tmp_path / "sparse.ckpt")
    save_checkpoint(make_classifier(head="mean"), tmp_path / "mean.ckpt")
    cases = {
        ("sparse.ckpt", "512"): "error: onnx_length=512 exceeds 144, the longest input at which this block-sparse "
                                "model computes full attention, which is what the ONNX graph computes: lower "
                                "onnx_length or train with attention=hf_full|sdpa",
        ("mean.ckpt", "128"): "error: ONNX export needs a stock head (head=cls with head.mlp_layers=1, or head=token "
                              "with head.mlp_layers=0), this model has head=mean: drop onnx_length",
        ("sparse.ckpt", "12x"): "error: onnx_length=12x is not a whole number of tokens: fix onnx_length",
    }
    for (ckpt, length), message in cases.items():
        out = tmp_path / f"out-{ckpt}-{length}"
        result = export_cli(f"ckpt_path={tmp_path / ckpt}", f"out={out}", f"onnx_length={length}")
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [message], result.stderr[-2000:]
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))
