"""pretrain.py: continued masked-LM pretraining; the loss drops, the head carries over, the output fine-tunes."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_script, tiny_overrides


def mlm_overrides(tmp, prefix: str = "mlm", **extra):
    overrides = tiny_overrides(tmp, **{f"{prefix}.max_steps": 40, f"{prefix}.eval_documents": 8, "optim.lr": 3e-3,
                                       "data.spec.num_train": 64, f"{prefix}.eval_max_lengths": "[128]", **extra})
    # pretrain.py has no callbacks group (its Trainer saves no checkpoints: it writes a stock folder)
    return [o for o in overrides if prefix == "task" or not o.startswith("callbacks.")]


@pytest.mark.slow
def test_mlm_loss_drops_and_the_saved_encoder_fine_tunes(tmp_path):
    from transformers import BigBirdForMaskedLM

    result = run_script("pretrain.py", mlm_overrides(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "mlm.json").read_text())
    assert report["steps"] == 40 and report["head_from_checkpoint"] is False
    assert report["mlm_loss_after"] < 0.9 * report["mlm_loss_before"], report
    assert set(report["by_length"]) == {"128", "512"}
    saved = tmp_path / "run" / "mlm_model"
    stock = BigBirdForMaskedLM.from_pretrained(saved)
    assert stock.config.attention_type == "block_sparse"
    # the adapted encoder is a model.pretrained= for fine-tuning (its own tokenizer comes along)
    result = run_script("train.py", tiny_overrides(tmp_path / "ft", **{
        "model.pretrained": saved, "model.tokenizer": saved, "debug": "fdr", "data.max_length": 512}))
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_converted_bert_keeps_its_mlm_head(tmp_path):
    """A BERT checkpoint with cls.predictions: the MaskedLM gives BERT's own MLM logits (short input)."""
    from transformers import BertConfig, BertForMaskedLM

    from bigbird_ft.models.encoder import make_encoder_config
    from bigbird_ft.models.masked_lm import MaskedLM

    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=128)).eval()
    bert.save_pretrained(tmp_path / "bert")

    class Vocab:
        pad_token_id, cls_token_id, sep_token_id = 0, 2, 3

        def __len__(self) -> int:
            return 120

    model_cfg = {"pretrained": str(tmp_path / "bert"), "block_size": 16, "num_random_blocks": 2,
                 "max_position_embeddings": 256}
    config = make_encoder_config(model_cfg, Vocab(), "original_full")
    module = MaskedLM(model_cfg, {"name": "sdpa"}, config, {"lr": 1e-3}, init_weights_from=str(tmp_path / "bert"))
    assert module.head_from_checkpoint
    ids = torch.randint(5, 120, (2, 64))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    module.eval()
    with torch.no_grad():
        ours = module.model(ids, mask)
        theirs = bert(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-4, rtol=1e-4)


def test_mlm_on_data_without_text_is_one_line(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("body,label\nsome words here,a\nmore words,b\n" * 4)
    overrides = [o for o in mlm_overrides(tmp_path, **{"data": "files", "data.train_file": data})
                 if not o.startswith("data.spec")]
    result = run_script("pretrain.py", overrides)
    from tests.data.test_data_errors import assert_one_line_error

    assert_one_line_error(result, "MLM needs text, but the column 'text' is not in the train split",
                          "set data.text_column", tmp_path=tmp_path)
    assert not (tmp_path / "run" / "mlm.json").exists()


def test_the_former_task_mlm_still_runs_with_a_note(tmp_path):
    """python train.py task=mlm (the spelling before pretrain.py) keeps working and says what replaced it."""
    overrides = mlm_overrides(tmp_path, prefix="task", **{"task.max_steps": 2, "data.spec.num_train": 16,
                                                          "task.eval_max_lengths": "[]"})
    result = run_script("train.py", ["task=mlm", *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task=mlm is deprecated: run python pretrain.py" in result.stdout + result.stderr
    assert json.loads((tmp_path / "run" / "mlm.json").read_text())["steps"] == 2
