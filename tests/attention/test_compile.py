"""model.compile=true: the compiled network gives the eager logits and trains."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_MODEL, run_script, tiny_overrides


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["block_sparse", "sdpa"])
def test_compiled_logits_match_eager(tiny_tokenizer, attention):
    from bigbird_ft.models.factory import build_classifier

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


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["block_sparse", "sdpa"])
def test_compiled_network_has_no_graph_break(attention):
    """The whole network is one graph: block_sparse's CPU kernel is an opaque custom op, and the
    all-valid shortcut (a data-dependent branch) is skipped while compiling."""
    from bigbird_ft.models.network import build_model

    encoder = {**TINY_MODEL["config"], "vocab_size": 400, "max_position_embeddings": 512, "block_size": 16,
               "num_random_blocks": 2, "attention_type": "original_full", "attention_probs_dropout_prob": 0.1}
    net = build_model({}, {"name": attention}, {"name": "cls"}, encoder, 2).train()
    ids = torch.randint(5, 400, (2, 512))
    mask = torch.ones_like(ids)
    mask[1, 300:] = 0
    net(ids, mask)  # the backend's plan tables exist before tracing, as after a first step
    explained = torch._dynamo.explain(net)(ids, mask)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
