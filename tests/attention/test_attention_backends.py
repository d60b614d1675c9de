"""Our attention backends (sdpa, block_sparse, flex) against HF's own BigBird, plus regressions.

Tiny random-init models (no hub). Every model is built inside a test: nothing runs at import.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BigBirdConfig, BigBirdModel

from bigbird_ft.attention import build_backend
from bigbird_ft.attention.base import AttentionBackend
from bigbird_ft.attention.kernels import _drop_mask, dropout_attention, mask_to_bias
from bigbird_ft.attention.plan import resampled_plan
from bigbird_ft.errors import UserError
from tests.conftest import require_module

BLOCK = 16
RAND = 2
TOL = 1e-4


def make_config(attention_type: str, **overrides: object) -> BigBirdConfig:
    values: dict[str, object] = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=1024,
        block_size=BLOCK,
        num_random_blocks=RAND,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        attention_type=attention_type,
    )
    values.update(overrides)
    return BigBirdConfig(**values)


def make_pair(
    ref_type: str, backend_name: str, seed: int = 0, **options: object
) -> tuple[BigBirdModel, BigBirdModel, AttentionBackend]:
    """HF reference model and a model with the same weights driven by ``backend_name``."""
    config_overrides = options.pop("config", {})
    assert isinstance(config_overrides, dict)
    torch.manual_seed(seed)
    ref = BigBirdModel(make_config(ref_type, **config_overrides), add_pooling_layer=False)
    backend = build_backend(
        backend_name,
        block_size=ref.config.block_size,
        num_random_blocks=ref.config.num_random_blocks,
        **options,
    )
    ours = BigBirdModel(make_config(backend.hf_attention_type, **config_overrides), add_pooling_layer=False)
    ours.load_state_dict(ref.state_dict())
    backend.attach(ours)
    return ref, ours, backend


def make_batch(length: int, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Row 0 full, row 1 padded after a bit more than half (padding inside a block)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, length // 2 + 5 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def compare(
    ref: BigBirdModel,
    ours: BigBirdModel,
    backend: AttentionBackend,
    length: int,
    training: bool,
    grads: bool = True,
    batch: int = 2,
) -> tuple[float, float]:
    """Max abs diff of the last hidden state on real tokens, and the largest relative elementwise
    difference over the gradients of every parameter (each relative to its own largest entry)."""
    ref.train(training)
    ours.train(training)
    ids, mask = make_batch(length, batch)
    valid = mask.bool()
    with torch.set_grad_enabled(grads):
        out = backend.encode(ours, ids, mask)
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    if ref.config.attention_type == "block_sparse" and length > backend.min_sparse_length():
        # HF switches itself to full attention for good on a short input: the reference must not have
        assert ref.attention_type == "block_sparse"
    diff = (out - expected)[valid].abs().max().item()
    if not grads:
        return diff, 0.0
    # LayerNorm output: sum(x^2) is nearly constant, so weigh the outputs randomly
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights)[valid].sum().backward()
    (expected * weights)[valid].sum().backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    # the key bias gets a gradient of exactly 0 in theory (softmax ignores a constant per row), so
    # its round-off (~1e-9) is measured against a floor of 1e-6 x the largest gradient anywhere
    floor = 1e-6 * max(g.abs().max().item() for g in ref_grads.values() if g is not None)
    worst = 0.0
    for name, param in ours.named_parameters():
        grad, grad_ref = param.grad, ref_grads[name]
        assert (grad is None) == (grad_ref is None), name
        if grad is None:
            continue
        scale = max(grad_ref.abs().max().item(), floor)
        worst = max(worst, (grad - grad_ref).abs().max().item() / scale)
    return diff, worst


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_sdpa_matches_hf_full(training: bool) -> None:
    ref, ours, backend = make_pair("original_full", "sdpa")
    diff, grad_diff = compare(ref, ours, backend, 256, training)
    assert diff <= TOL
    assert grad_diff <= 1e-4


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("length", [512, 1024], ids=["n512-plan-with-head", "n1024-legacy-plan"])
def test_block_sparse_matches_hf_block_sparse(length: int, training: bool) -> None:
    ref, ours, backend = make_pair("block_sparse", "block_sparse", random_blocks="hf")
    diff, grad_diff = compare(ref, ours, backend, length, training)
    assert diff <= TOL
    assert grad_diff <= 1e-4


def test_block_sparse_matches_hf_r3_odd_length() -> None:
    ref, ours, backend = make_pair(
        "block_sparse", "block_sparse", random_blocks="hf", config={"num_random_blocks": 3}
    )
    diff, grad_diff = compare(ref, ours, backend, 23 * BLOCK, training=True)
    assert diff <= TOL
    assert grad_diff <= 1e-4


def test_block_sparse_is_not_dense() -> None:
    """Guards the equivalence tests: the sparse pattern must differ from full attention here."""
    _, ours, backend = make_pair("original_full", "block_sparse")
    _, dense, dense_backend = make_pair("original_full", "sdpa")
    ids, mask = make_batch(512)
    with torch.no_grad():
        gap = (
            (backend.encode(ours.eval(), ids, mask) - dense_backend.encode(dense.eval(), ids, mask))
            .abs()
            .max()
        )
    assert gap > 1e-3


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train-plan-no-grad"])
@pytest.mark.parametrize("length", [512, 1024])
def test_flex_forward_matches_hf_block_sparse(length: int, training: bool) -> None:
    """Training mode uses HF's training random plan (eval's is all zeros): checked without grad,
    since CPU FlexAttention has no backward."""
    ref, ours, backend = make_pair("block_sparse", "flex", random_blocks="hf")
    diff, _ = compare(ref, ours, backend, length, training=training, grads=False)
    assert diff <= TOL


@pytest.mark.parametrize("name", ["block_sparse", "flex"])
def test_short_batch_runs_dense(name: str) -> None:
    ref, ours, backend = make_pair("original_full", name)
    length = backend.min_sparse_length()
    diff, _ = compare(ref, ours, backend, length, training=False, grads=False)
    assert diff <= TOL


# ----------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("name", ["hf_block_sparse", "block_sparse", "flex"])
def test_short_batch_does_not_change_later_long_batches(name: str) -> None:
    _, ours, backend = make_pair("block_sparse", name)
    _, fresh, fresh_backend = make_pair("block_sparse", name)
    ours.eval()
    fresh.eval()
    long_ids, long_mask = make_batch(512)
    short_ids, short_mask = make_batch(backend.min_sparse_length())
    with torch.no_grad():
        backend.encode(ours, short_ids, short_mask)
        after_short = backend.encode(ours, long_ids, long_mask)
        expected = fresh_backend.encode(fresh, long_ids, long_mask)
    assert torch.equal(after_short, expected)


@pytest.mark.parametrize(
    ("name", "options", "training"),
    [
        ("block_sparse", {"random_blocks": "hf"}, True),
        ("block_sparse", {"random_blocks": "resample"}, True),
        ("block_sparse", {"random_blocks": "resample"}, False),
        ("flex", {"random_blocks": "hf"}, False),
    ],
)
def test_forward_leaves_numpy_global_rng_alone(name: str, options: dict[str, str], training: bool) -> None:
    _, ours, backend = make_pair("original_full", name, **options)
    ours.train(training)
    ids, mask = make_batch(512)
    np.random.seed(1234)
    before = np.random.get_state()
    with torch.no_grad():
        backend.encode(ours, ids, mask)
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


@pytest.mark.parametrize("name", ["sdpa", "block_sparse"])
def test_bf16_autocast_train_step_cpu(name: str) -> None:
    _, ours, backend = make_pair("original_full", name)
    ours.train()
    ids, mask = make_batch(512)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
    weights = torch.randn(2, 512, 32)
    seen: list[torch.dtype] = []
    ours.encoder.layer[0].attention.self.register_forward_hook(lambda m, a, out: seen.append(out[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backend.encode(ours, ids, mask)
    assert seen == [torch.bfloat16]  # attention ran in bf16 (LayerNorm outputs are fp32 under autocast)
    loss = (out.float() * weights)[mask.bool()].mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)
    optimizer.step()
    with torch.no_grad():
        reference = backend.encode(ours.eval(), ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = backend.encode(ours, ids, mask)
    assert (low.float() - reference)[mask.bool()].abs().max() < 0.1


def test_resample_draws_new_blocks_each_training_step() -> None:
    _, ours, backend = make_pair("original_full", "block_sparse", random_blocks="resample")
    ids, mask = make_batch(512)
    with torch.no_grad():
        first = backend.encode(ours.train(), ids, mask)
        second = backend.encode(ours, ids, mask)
        eval_a = backend.encode(ours.eval(), ids, mask)
        eval_b = backend.encode(ours, ids, mask)
    assert torch.isfinite(first).all() and torch.isfinite(second).all()
    assert (first - second).abs().max() > 1e-4  # dropout is 0: only the random blocks changed
    assert torch.equal(eval_a, eval_b)  # eval uses one fixed plan


def test_resampled_plan_excludes_globals_and_window() -> None:
    rng = np.random.default_rng(0)
    num_blocks, num_rand = 32, 3
    plans = [resampled_plan(rng, num_blocks, num_rand, num_heads=4) for _ in range(2)]
    assert not np.array_equal(plans[0], plans[1])
    for plan in plans:
        assert plan.shape == (4, num_blocks - 2, num_rand)
        rows = np.arange(1, num_blocks - 1)[None, :, None]
        assert ((plan > 0) & (plan < num_blocks - 1)).all()
        assert (np.abs(plan - rows) > 1).all()
        assert all(len(set(row)) == num_rand for row in plan.reshape(-1, num_rand))
    # every middle block is reachable (the paper's pattern; HF's plan only uses the first blocks)
    assert set(np.unique(plans[0])) == set(range(1, num_blocks - 1))


@pytest.mark.parametrize("random_blocks", ["hf", "resample"])
def test_gradient_checkpointing_gives_same_gradients(random_blocks: str) -> None:
    grads, layer_calls = [], []
    for checkpointing in (False, True):
        _, ours, backend = make_pair("original_full", "block_sparse", random_blocks=random_blocks)
        if checkpointing:
            ours.gradient_checkpointing_enable()
        ours.train()
        calls = []
        # counts FFN forwards of layer 0: with checkpointing the layer runs again during backward (a hook on
        # the layer itself fires once: the checkpoint wraps its whole call, hooks included)
        ours.encoder.layer[0].intermediate.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        ids, mask = make_batch(512)
        out = backend.encode(ours, ids, mask)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        (out * weights)[mask.bool()].sum().backward()
        grads.append({n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None})
        layer_calls.append(len(calls))
    assert layer_calls == [1, 2]  # recomputed in backward, so activations were not kept
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["sdpa", "block_sparse"])
def test_attention_dropout_applied_in_training_only(name: str) -> None:
    _, ours, backend = make_pair("original_full", name, config={"attention_probs_dropout_prob": 0.5})
    ids, mask = make_batch(512)
    with torch.no_grad():
        torch.manual_seed(0)
        train_a = backend.encode(ours.train(), ids, mask)
        train_b = backend.encode(ours, ids, mask)
        eval_a = backend.encode(ours.eval(), ids, mask)
        eval_b = backend.encode(ours, ids, mask)
    assert (train_a - train_b).abs().max() > 1e-3
    assert torch.equal(eval_a, eval_b)


@pytest.mark.parametrize("name", ["block_sparse", "sdpa"])
def test_gradients_after_an_inference_mode_pass(name: str) -> None:
    # evidence runs predict (inference_mode) and then a gradient pass on the same eval model: a plan
    # cached by the first must not be an inference tensor saved for backward by the second
    _, ours, backend = make_pair("original_full", name)
    ids, mask = make_batch(512)
    ours.eval()
    with torch.inference_mode():
        before = backend.encode(ours, ids, mask)
    embeddings = ours.get_input_embeddings()
    out = backend.encode(ours, ids, mask)
    out.sum().backward()
    assert embeddings.weight.grad is not None and embeddings.weight.grad.abs().sum() > 0
    assert torch.allclose(out.detach(), before, atol=1e-5)


def test_dropout_kernel_matches_autograd_reference() -> None:
    """Our recomputing dense dropout-attention kernel vs plain autograd with the same dropout mask."""
    torch.manual_seed(0)
    batch, groups, q_len, dim, p = 2, 3, 4, 8, 0.3
    opts = {"dtype": torch.float64, "requires_grad": True}
    query = torch.randn(batch, groups, q_len, dim, **opts)
    key, value = torch.randn(batch, groups, 12, dim, **opts), torch.randn(batch, groups, 12, dim, **opts)
    bias = mask_to_bias(torch.rand(batch, groups, 1, 12) > 0.3)
    grad_out = torch.randn(batch, groups, q_len, dim, dtype=torch.float64)

    torch.manual_seed(5)
    out = dropout_attention(query, key, value, bias, p)
    grads = torch.autograd.grad(out, (query, key, value), grad_out)

    probs = ((query @ key.transpose(-1, -2)).float() * dim**-0.5 + bias).softmax(-1)
    torch.manual_seed(5)
    drop, rescale = _drop_mask(torch.Size((batch * groups, q_len, 12)), p, probs.device)
    expected = (probs * ~drop.view(probs.shape) * rescale).double() @ value
    expected_grads = torch.autograd.grad(expected, (query, key, value), grad_out)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def reference_block_sparse(query, key, value, index, slot_valid, key_valid, block, keeps, rescale):
    """Plain autograd BigBird attention per (batch, head) pair, dropping where ``keeps`` (the kernel's
    recorded masks, global then middle per pair) say so."""
    batch, heads, length, dim = query.shape
    blocks = length // block
    out = torch.zeros_like(query)
    masks = iter(keeps)
    for b in range(batch):
        bias = torch.zeros(length, dtype=query.dtype).masked_fill(~key_valid[b], -1e30)
        for h in range(heads):
            q, k, v = query[b, h], key[b, h], value[b, h]
            glob = torch.cat([q[:block], q[-block:]])
            probs = (glob @ k.T * dim**-0.5 + bias).softmax(-1) * next(masks).to(query.dtype) * rescale
            context = probs @ v
            rows = []
            for row in range(blocks - 2):
                slots = index[h, row]
                keys = torch.cat([k[s * block:(s + 1) * block] for s in slots.tolist()])
                allowed = slot_valid[row].repeat_interleave(block) & torch.cat(
                    [key_valid[b, s * block:(s + 1) * block] for s in slots.tolist()])
                scores = q[(row + 1) * block:(row + 2) * block] @ keys.T * dim**-0.5
                rows.append(scores.masked_fill(~allowed, -1e30).softmax(-1))
            mid = torch.stack(rows) * next(masks).to(query.dtype) * rescale
            middle = [mid[r] @ torch.cat([v[s * block:(s + 1) * block] for s in index[h, r].tolist()])
                      for r in range(blocks - 2)]
            out[b, h] = torch.cat([context[:block], *middle, context[block:]])
    return out * key_valid[:, None, :, None].to(out.dtype)


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_block_sparse_cpu_kernel_matches_autograd_reference(monkeypatch, dropout_p: float) -> None:
    """block_kernel's hand-written forward and backward vs autograd on the same plan, padding and
    dropout masks (fp64, a padded row, repeated random blocks)."""
    from bigbird_ft.attention import block_kernel
    from bigbird_ft.attention.plan import hf_random_plan, key_block_table

    batch, heads, length, dim, block, rand = 2, 2, 160, 8, 16, 2
    plan = hf_random_plan(length, block, rand, heads, 0, 1024, True)
    index, slot_valid = key_block_table(plan, length // block, torch.device("cpu"))
    key_valid = torch.ones(batch, length, dtype=torch.bool)
    key_valid[1, 100:] = False
    torch.manual_seed(0)
    qkv = [torch.randn(batch, length, heads * dim, dtype=torch.float64).view(batch, length, heads, dim)
           .transpose(1, 2).requires_grad_() for _ in range(3)]
    grad_out = torch.randn(batch, heads, length, dim, dtype=torch.float64)
    recorded: list[torch.Tensor] = []
    draw = block_kernel._keep

    def recording(*args):
        mask = draw(*args)
        recorded.append(mask.clone())
        return mask

    monkeypatch.setattr(block_kernel, "_keep", recording)
    out = block_kernel.block_sparse_core(*qkv, index, slot_valid, key_valid, block, dropout_p)
    grads = torch.autograd.grad(out, qkv, grad_out)
    if dropout_p:
        assert len(recorded) == 2 * batch * heads and 0 < float(torch.cat([m.flatten() for m in recorded])
                                                                 .float().mean()) < 1
        rescale = block_kernel.dropout_threshold(dropout_p)[1]
    else:
        recorded = [torch.ones(1, dtype=torch.uint8)] * (2 * batch * heads)
        rescale = 1.0
    expected = reference_block_sparse(*qkv, index, slot_valid, key_valid, block, recorded, rescale)
    expected_grads = torch.autograd.grad(expected, qkv, grad_out)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_block_sparse_builds_no_n_by_n_tensor() -> None:
    """Every tensor produced in forward and backward stays far below B*H*N*N elements."""
    dispatch = require_module("torch.utils._python_dispatch", "a private torch module this torch lacks")

    class MaxNumel(dispatch.TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for item in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(item, torch.Tensor):
                    self.largest = max(self.largest, item.numel())
            return out

    length = 2048
    _, ours, backend = make_pair(
        "original_full", "block_sparse", config={"max_position_embeddings": length, "num_attention_heads": 2}
    )
    ids, mask = make_batch(length, batch=1)
    mode = MaxNumel()
    with mode:
        backend.encode(ours.train(), ids, mask).sum().backward()
    assert mode.largest < length * length // 4


def test_flex_cpu_training_is_a_user_error() -> None:
    _, ours, backend = make_pair("original_full", "flex")
    assert backend.supports_cpu_training is False
    ids, mask = make_batch(512)
    with pytest.raises(UserError, match="attention=block_sparse"):
        backend.encode(ours.train(), ids, mask)


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="attention.random_blocks"):
        build_backend("block_sparse", block_size=16, num_random_blocks=2, random_blocks="sometimes")
    with pytest.raises(UserError, match="no option"):
        build_backend("sdpa", block_size=16, num_random_blocks=2, random_blocks="hf")


def test_state_dict_keys_unchanged_by_attach() -> None:
    ref, ours, _ = make_pair("block_sparse", "block_sparse")
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "encoder.layer.0.attention.self.query.weight" in ours.state_dict()


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("length", [1024, 4096])
def test_block_sparse_matches_hf_long(length: int, training: bool) -> None:
    """bigbird-base's block (64) and r (3): 2 layers, a padded row, every gradient."""
    ref, ours, backend = make_pair(
        "block_sparse",
        "block_sparse",
        random_blocks="hf",
        config={
            "block_size": 64,
            "num_random_blocks": 3,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "max_position_embeddings": 4096,
        },
    )
    diff, grad_diff = compare(ref, ours, backend, length, training=training, batch=2)
    assert diff <= TOL
    assert grad_diff <= 1e-4


def test_encoder_config_fuses_gelu_new_and_keeps_the_function() -> None:
    """make_encoder_config swaps HF's 5-op gelu_new for the fused gelu_pytorch_tanh (same tanh
    approximation): same hidden states, and any other activation is left alone."""
    from bigbird_ft.models.encoder import make_encoder_config

    class Vocab:
        pad_token_id, cls_token_id, sep_token_id = 0, 2, 3

        def __len__(self) -> int:
            return 100

    model_cfg = {"pretrained": None, "block_size": BLOCK, "num_random_blocks": RAND,
                 "config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "intermediate_size": 64}}
    assert make_encoder_config(model_cfg, Vocab(), "original_full")["hidden_act"] == "gelu_pytorch_tanh"
    exact = {**model_cfg, "config": {**model_cfg["config"], "hidden_act": "gelu"}}
    assert make_encoder_config(exact, Vocab(), "original_full")["hidden_act"] == "gelu"
    ref, ours, backend = make_pair("original_full", "block_sparse")
    fused, _, _ = make_pair("original_full", "block_sparse", config={"hidden_act": "gelu_pytorch_tanh"})
    fused.load_state_dict(ref.state_dict())
    ids, mask = make_batch(512)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    assert ref.config.hidden_act == "gelu_new"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
