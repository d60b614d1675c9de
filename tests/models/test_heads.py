import pytest
import torch
from transformers import BigBirdConfig
from transformers.models.big_bird.modeling_big_bird import BigBirdClassificationHead

from bigbird_ft.heads import available_heads, build_head

HIDDEN = 32


def test_every_head_is_registered():
    assert set(available_heads()) >= {"cls", "mean", "max", "pooler", "attention"}


@pytest.mark.parametrize("name", ["mean", "max", "attention"])
def test_padding_never_changes_pooling_heads(name):
    torch.manual_seed(0)
    head = build_head(name, HIDDEN, 3, dropout=0.0).eval()
    hidden = torch.randn(2, 20, HIDDEN)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    base = head(hidden, mask)
    padded_hidden = torch.cat([hidden, 100 * torch.randn(2, 12, HIDDEN)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 12, dtype=torch.long)], dim=1)
    assert torch.allclose(head(padded_hidden, padded_mask), base, atol=1e-5)
    # and the padded positions of row 1 inside the original width do not count either
    hidden2 = hidden.clone()
    hidden2[1, 13:] = -50.0
    assert torch.allclose(head(hidden2, mask), base, atol=1e-5)


def test_cls_head_matches_hf_classification_head():
    torch.manual_seed(0)
    config = BigBirdConfig(hidden_size=HIDDEN, num_labels=3, hidden_act="gelu_new", hidden_dropout_prob=0.0)
    ours = build_head("cls", HIDDEN, 3, dropout=0.0, activation="gelu_new").eval()
    theirs = BigBirdClassificationHead(config).eval()
    theirs.dense.load_state_dict(ours.mlp.dense.state_dict())
    theirs.out_proj.load_state_dict(ours.mlp.out_proj.state_dict())
    hidden = torch.randn(4, 16, HIDDEN)
    assert torch.allclose(ours(hidden, torch.ones(4, 16)), theirs(hidden), atol=1e-6)


def test_pooler_head_uses_bigbird_pooler():
    torch.manual_seed(0)
    pooler = torch.nn.Linear(HIDDEN, HIDDEN)
    head = build_head("pooler", HIDDEN, 2, dropout=0.0).eval()
    hidden = torch.randn(2, 16, HIDDEN)
    expected = head.mlp(torch.tanh(pooler(hidden[:, 0])))
    assert torch.allclose(head(hidden, torch.ones(2, 16), pooler), expected)


def test_mlp_depth_and_width_are_configurable():
    head = build_head("mean", HIDDEN, 5, mlp_layers=3, mlp_hidden_size=48)
    assert head.mlp.dense.out_features == 48 and len(head.mlp.extra_dense) == 2
    assert head(torch.randn(2, 8, HIDDEN), torch.ones(2, 8)).shape == (2, 5)
