import pytest
import torch

from bigbird_ft.errors import UserError
from bigbird_ft.inputs.spec import InputSpec
from bigbird_ft.tasks.base import aggregate


def test_chunk_windows_cover_the_whole_document_with_overlap(make_classifier):
    module = make_classifier()
    tok = module.tokenizer
    text = " ".join("movx ritix kipx vasodax" for _ in range(150))
    content = tok(text, add_special_tokens=False)["input_ids"]
    spec = module.inputs.replace(max_length=128, stride=32)
    feats = spec.encode(tok, [text, "rorx"], long_docs="chunk")
    windows = [f["input_ids"] for f in feats if f["row"] == 0]
    assert len(windows) > 1 and all(len(w) <= 128 for w in windows)
    assert all(w[0] == tok.cls_token_id and w[-1] == tok.sep_token_id for w in windows)
    # consecutive windows share `stride` tokens, and together they hold every token once more
    rebuilt = list(windows[0][1:-1])
    for w in windows[1:]:
        assert w[1 : 1 + 32] == rebuilt[-32:]
        rebuilt += w[1 + 32 : -1]
    assert rebuilt == content
    assert [f["row"] for f in feats].count(1) == 1
    truncated = spec.encode(tok, [text], long_docs="truncate")
    assert len(truncated) == 1 and len(truncated[0]["input_ids"]) == 128


def test_aggregate_mean_and_max_per_document():
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    logits = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])
    assert torch.equal(aggregate(rows, logits, 3, "mean"), torch.tensor([[2.0, 1.0], [5.0, 5.0], [0.0, 3.0]]))
    assert torch.equal(aggregate(rows, logits, 3, "max"), torch.tensor([[3.0, 2.0], [5.0, 5.0], [0.0, 5.0]]))
    with pytest.raises(UserError, match="chunk_aggregation"):
        aggregate(rows, logits, 3, "median")


def test_an_old_checkpoints_data_settings_get_the_specs_defaults():
    """Checkpoints from before a key existed: one place fills it in (predict, tagging and evidence
    each kept their own defaults before)."""
    spec = InputSpec.from_hparams({"max_length": 512, "text_column": "body"}, block_size=64)
    assert (spec.max_length, spec.pad_to_multiple_of, spec.stride, spec.text_columns) == (512, 64, 128, ("body",))
    assert InputSpec.from_hparams(spec.to_hparams(), block_size=16) == spec
