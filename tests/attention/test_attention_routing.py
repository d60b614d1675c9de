"""hf_block_sparse: a short batch runs full attention for that call only (transformers 20031)."""

import torch
from transformers import BigBirdConfig, BigBirdModel

from bigbird_ft.attention import available_backends, build_backend


def tiny_encoder(attention_type: str) -> BigBirdModel:
    torch.manual_seed(0)
    config = BigBirdConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=1024, block_size=16, num_random_blocks=2, attention_type=attention_type,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BigBirdModel(config, add_pooling_layer=False).eval()


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (2, n), generator=g)
    mask = torch.ones_like(ids)
    mask[1, n - 40 :] = 0
    return ids, mask


def test_both_hf_backends_registered():
    assert {"hf_full", "hf_block_sparse"} <= set(available_backends())


def test_hf_itself_switches_to_full_attention_for_good():
    """Canary: if HF fixes issue 20031, our routing becomes a no-op and this test says so."""
    encoder = tiny_encoder("block_sparse")
    encoder(*batch(64))
    assert encoder.attention_type == "original_full"


def test_short_batch_does_not_change_later_sparse_outputs():
    backend = build_backend("hf_block_sparse", block_size=16, num_random_blocks=2)
    long_ids, long_mask = batch(512, seed=1)
    fresh = tiny_encoder("block_sparse")
    with torch.no_grad():
        expected = backend.encode(fresh, long_ids, long_mask)
        routed = tiny_encoder("block_sparse")
        short = backend.encode(routed, *batch(64))
        assert routed.attention_type == "block_sparse"
        after = backend.encode(routed, long_ids, long_mask)
    assert short.shape == (2, 64, 32)
    assert torch.equal(after, expected)
    full = tiny_encoder("original_full")
    with torch.no_grad():
        dense = full(input_ids=long_ids, attention_mask=long_mask).last_hidden_state
    # the sparse output really is sparse attention, not a silent full-attention fallback
    assert (after - dense)[long_mask.bool()].abs().max() > 1e-3


def test_short_batch_matches_full_attention():
    backend = build_backend("hf_block_sparse", block_size=16, num_random_blocks=2)
    ids, mask = batch(128)
    with torch.no_grad():
        routed = backend.encode(tiny_encoder("block_sparse"), ids, mask)
        dense = tiny_encoder("original_full")(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(routed[mask.bool()], dense[mask.bool()], atol=1e-5)
