"""Dense attention core with dropout that keeps only the inputs and a 1-byte dropout mask for backward.

PyTorch's fused SDPA kernels have no dropout on CPU; with ``dropout_p > 0`` SDPA falls back to
its math kernel, which keeps the scores, the probabilities and the dropped probabilities (three
fp32 tensors of the score size) for backward. Here the forward keeps q, k, v, the additive mask and
a bool keep-mask; backward recomputes the probabilities. The softmax always runs in fp32 (also
under bf16 autocast). Used by ``sdpa`` (and by short batches of the sparse backends) on CPU; the
block-sparse pattern has its own kernel (``block_kernel.py``).
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


#: dropout draws 16-bit random lanes: p is rounded to a multiple of 1/65536, the rescale exact
DROPOUT_LANES = 65536


def dropout_threshold(dropout_p: float) -> tuple[int, float]:
    """The int16 lane threshold (lane < threshold = dropped) and the keep rescale 1 / (1 - p')
    of the rounded p', so the expectation is exact."""
    dropped = round(dropout_p * DROPOUT_LANES)
    return dropped - DROPOUT_LANES // 2, DROPOUT_LANES / (DROPOUT_LANES - dropped)


def _drop_mask(shape: torch.Size, dropout_p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """bool mask, True = dropped, and the keep rescale.

    16-bit random lanes of int64 draws (from torch's RNG, like nn.Dropout): on CPU half the cost
    of ``bernoulli_``.
    """
    numel = shape.numel()
    lanes = torch.randint(-(2**63), 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device)
    threshold, rescale = dropout_threshold(dropout_p)
    return lanes.view(torch.int16)[:numel].view(shape) < threshold, rescale


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
    """softmax(q k^T * scale + bias) with dropout, times v.

    ``query (B, M, Lq, D)``, ``key``/``value (B, M, Lk, D)``, ``bias``: fp32 ``(B or 1, M or 1, 1, Lk)``.
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
        key_g, value_g = _flat(key), _flat(value)
        scale = query.shape[-1] ** -0.5
        flat_bias = _flat_bias(bias, query.shape[:-2])
        probs = _probs(_flat(query), key_g, flat_bias, scale)
        drop, rescale = _drop_mask(probs.shape, dropout_p, probs.device)
        probs.masked_fill_(drop, 0.0)
        out = torch.bmm(probs.to(value_g.dtype), value_g).mul_(rescale).view(query.shape)
        ctx.save_for_backward(query, key, value, flat_bias, drop, out)
        ctx.rescale = rescale
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        query, key, value, flat_bias, drop, out = ctx.saved_tensors
        key_g, value_g = _flat(key), _flat(value)
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
        return grad_query, grad_key_g.view(key.shape), grad_value_g.view(value.shape), None, None


def dropout_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None,
                      dropout_p: float) -> torch.Tensor:
    """Attention with dropout on the probabilities; see ``_DropoutAttention`` for the shapes."""
    with torch.autocast(device_type=query.device.type, enabled=False):
        dtype = torch.promote_types(query.dtype, key.dtype)
        return _DropoutAttention.apply(
            query.to(dtype), key.to(dtype), value.to(dtype), bias, float(dropout_p)
        )
