"""model.compile=true: the compiled network gives the eager logits and trains."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import TINY_MODEL, run_script, tiny_overrides


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["block_sparse", "sdpa"])
def test_compiled_logits_match_eager(tiny_tokenizer, attention):
    from bigbird_ft.factory import build_classifier

    def build(compile_: bool):
        torch.manual_seed(0)
        return build_classifier(
            model={**TINY_MODEL, "compile": compile_}, attention={"name": attention},
            head={"name": "attention", "dropout": 0.0}, id2label={0: "a", 1: "b"}, tokenizer=tiny_tokenizer,
            optim={"lr": 1e-3}, data={"max_length": 512, "pad_to_multiple_of": 16},
        ).eval()

    eager, compiled = build(False), build(True)
    compiled.load_state_dict(eager.state_dict())  # same names: compiling in place keeps them
    ids = torch.randint(5, 400, (2, 512))
    mask = torch.ones_like(ids)
    mask[1, 200:] = 0
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, mask), eager(ids, mask), atol=1e-4, rtol=1e-4)
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None


@pytest.mark.slow
def test_a_compiled_run_trains(tmp_path):
    result = run_script("train.py", tiny_overrides(tmp_path, **{
        "model.compile": "true", "attention": "sdpa", "debug": "fdr", "model.block_size": 16}))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["val/acc"] <= 1 and metrics["val/loss"] > 0
