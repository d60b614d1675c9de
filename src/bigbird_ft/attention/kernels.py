"""Attention core with dropout that keeps only the inputs and a 1-byte dropout mask for backward.

PyTorch's fused SDPA kernels have no dropout on CPU; with ``dropout_p > 0`` SDPA falls back to
its math kernel, which keeps the scores, the probabilities and the dropped probabilities (three
fp32 tensors of the score size) for backward, and on a BigBird training step that is most of the
attention memory. Here the forward keeps q, k, v (block-sparse: the un-gathered keys/values and
the gather index), the additive mask and a bool keep-mask; backward recomputes the probabilities.
The softmax always runs in fp32 (also under bf16 autocast).
"""

from __future__ import annotations

from typing import Any

import torch

#: additive penalty of masked keys: finite, so a row with every key masked gets uniform weights
#: (as HF's -10000) instead of NaN
MASKED = -1e30


def mask_to_bias(mask: torch.Tensor) -> torch.Tensor:
    """bool keep-mask -> fp32 additive bias (0 or MASKED)."""
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, MASKED)


def _gathered(blocks: torch.Tensor, index: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    if index is None:
        return blocks
    return blocks.index_select(1, index).view(shape)


def _drop_mask(shape: torch.Size, dropout_p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """bool mask, True = dropped, and the keep rescale 1 / (1 - p).

    16-bit random lanes of int64 draws (from torch's RNG, like nn.Dropout): on CPU half the cost
    of ``bernoulli_``. p is rounded to a multiple of 1/65536 and the rescale uses that value, so
    the expectation is exact.
    """
    numel = shape.numel()
    lanes = torch.randint(-(2**63), 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device)
    threshold = round(dropout_p * 65536)
    drop = lanes.view(torch.int16)[:numel].view(shape) < threshold - 32768
    return drop, 65536 / (65536 - threshold)


def _probs(query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """fp32 softmax of the scaled scores; 3-D (N, Lq, Lk) operands."""
    if bias is None:
        scores = torch.bmm(query, key.transpose(1, 2))
        scores = scores.float().mul_(scale) if scores.dtype != torch.float32 else scores.mul_(scale)
    else:
        scores = torch.baddbmm(bias.to(query.dtype), query, key.transpose(1, 2), alpha=scale)
    return scores.float().softmax(dim=-1)


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1, *tensor.shape[-2:])


def _flat_bias(bias: torch.Tensor | None, lead: torch.Size) -> torch.Tensor | None:
    """(.., 1, Lk) bias broadcast over the leading dims -> (N, 1, Lk) for baddbmm."""
    if bias is None:
        return None
    return bias.expand(*lead, *bias.shape[-2:]).reshape(-1, *bias.shape[-2:])


class _DropoutAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) with dropout, times v; keys/values optionally gathered.

    ``key``/``value``: ``(B, M, Lk, D)``, or with ``index`` the block tensors ``(B, K, b, D)``
    from which ``index_select(1, index)`` gathers ``(B, M, Lk, D)``. ``bias``: fp32
    ``(B or 1, M or 1, 1, Lk)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        index: torch.Tensor | None,
        bias: torch.Tensor | None,
        dropout_p: float,
    ) -> torch.Tensor:
        shape = (*query.shape[:2], -1, query.shape[-1])
        key_g = _flat(_gathered(key, index, shape))
        value_g = _flat(_gathered(value, index, shape))
        scale = query.shape[-1] ** -0.5
        flat_bias = _flat_bias(bias, query.shape[:-2])
        probs = _probs(_flat(query), key_g, flat_bias, scale)
        drop, rescale = _drop_mask(probs.shape, dropout_p, probs.device)
        probs.masked_fill_(drop, 0.0)
        out = torch.bmm(probs.to(value_g.dtype), value_g).mul_(rescale).view(query.shape)
        ctx.save_for_backward(query, key, value, index, flat_bias, drop, out)
        ctx.rescale = rescale
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        query, key, value, index, flat_bias, drop, out = ctx.saved_tensors
        shape = (*query.shape[:2], -1, query.shape[-1])
        key_g = _flat(_gathered(key, index, shape))
        value_g = _flat(_gathered(value, index, shape))
        query_f = _flat(query)
        grad = _flat(grad_out.contiguous())
        probs = _probs(query_f, key_g, flat_bias, ctx.scale)
        # softmax backward: p * (dP - rowsum(dP * p)), and rowsum(dP * p) = rowsum(grad_out * out);
        # dP is zero where dropped. Order chosen so that no score-sized tensor is copied.
        grad_scores = torch.bmm(grad * ctx.rescale, value_g.transpose(1, 2)).float().masked_fill_(drop, 0.0)
        row = (grad.float() * _flat(out).float()).sum(dim=-1, keepdim=True)
        grad_scores = grad_scores.sub_(row).mul_(probs).to(query.dtype)
        kept = probs.masked_fill_(drop, 0.0).to(grad.dtype)
        grad_value_g = torch.bmm(kept.transpose(1, 2), grad).mul_(ctx.rescale)
        del kept, probs
        grad_query = torch.bmm(grad_scores, key_g).mul_(ctx.scale).view(query.shape)
        grad_key_g = torch.bmm(grad_scores.transpose(1, 2), query_f).mul_(ctx.scale)
        if index is None:
            return grad_query, grad_key_g.view(key.shape), grad_value_g.view(value.shape), None, None, None
        flat = (query.shape[0], -1, *key.shape[2:])
        grad_key = torch.zeros_like(key).index_add_(1, index, grad_key_g.reshape(flat))
        grad_value = torch.zeros_like(value).index_add_(1, index, grad_value_g.reshape(flat))
        return grad_query, grad_key, grad_value, None, None, None


def dropout_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    dropout_p: float,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention with dropout on the probabilities; see ``_DropoutAttention`` for the shapes."""
    with torch.autocast(device_type=query.device.type, enabled=False):
        dtype = torch.promote_types(query.dtype, key.dtype)
        return _DropoutAttention.apply(
            query.to(dtype), key.to(dtype), value.to(dtype), index, bias, float(dropout_p)
        )
