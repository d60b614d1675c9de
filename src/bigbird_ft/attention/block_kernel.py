"""The CPU kernel of ``block_sparse``: BigBird attention, forward and backward, one (batch, head) at a time.

Why by hand: on CPU a large fresh tensor costs its page faults (glibc returns allocations above
its mmap threshold to the OS on free, so the next one is faulted in again: filling a new 64 MiB
tensor took 16.6 ms here, a reused one 0.9 ms) and PyTorch's CPU allocator caches nothing. A
whole-batch formulation (gather every key block of every head, one SDPA call, index_add back)
makes several score-sized temporaries per layer. Here one set of per-pair scratch buffers is
allocated per call and reused by every (batch, head) pair through ``out=`` ops.

Per pair, with ``nb`` blocks and ``S = 5 + r`` key slots per middle query block:

* the two global query blocks (first, last) attend every key: one ``(2b, N)`` score matrix;
* middle query blocks ``1 .. nb-2`` attend their slots ``[0, i-1, i, i+1, random..., nb-1]``:
  the key/value blocks are gathered (``index_select`` of the pair's ``(nb, b, D)`` block view,
  itself a strided view of the projection output, so no head transpose is copied) into
  ``(nb-2, S*b, D)``, and one ``baddbmm`` with the additive mask (padding, and the two duplicate
  window slots) gives the scores.

Inputs stay in the layout the projections produce (``(B, N, H, D)`` memory, seen as
``(B, H, N, D)``) and the output is written in that layout, so the caller's merge of the heads is
a view. The softmax runs in fp32. Backward recomputes the probabilities; only the 1-byte dropout
keep-mask is kept from forward (keeping the fp32 probabilities instead, one score-sized tensor per
layer, made a training step only ~2 % faster at n = 4,096).
"""

from typing import Any

import torch

from .kernels import MASKED, dropout_threshold


def middle_bias(
    index: torch.Tensor, slot_valid: torch.Tensor, key_valid: torch.Tensor | None, block: int
) -> torch.Tensor:
    """fp32 additive mask of the middle rows' gathered keys: ``(B or 1, H, nb-2, S*b)``.

    ``index (H, nb-2, S)`` key blocks, ``slot_valid (nb-2, S)`` (False on the duplicate window
    slots), ``key_valid (B, N)`` or None when nothing is padded.
    """
    heads, rows, slots = index.shape
    keep = slot_valid[None, None, :, :, None].expand(1, heads, rows, slots, block)
    if key_valid is not None:
        blocks = key_valid.view(key_valid.shape[0], -1, block)  # (B, nb, b)
        keep = keep & blocks[:, index]  # (B, H, rows, S, b)
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=index.device).masked_fill_(~keep, MASKED)
    return bias.view(bias.shape[0], heads, rows, slots * block)


class _Scratch:
    """Buffers of one pair's temporaries, allocated once per call and reused by every pair."""

    def __init__(self, rows: int, keys: int, block: int, length: int, dim: int, dtype: torch.dtype,
                 device: torch.device, backward: bool) -> None:
        def empty(*shape: int, kind: torch.dtype = dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=kind, device=device)

        wide = torch.float32 if dtype.itemsize < 4 else dtype
        self.keys = empty(rows * keys // block, block, dim)
        self.values = empty(rows * keys // block, block, dim)
        self.scores = empty(rows, block, keys)
        self.probs = empty(rows, block, keys, kind=wide)
        self.global_scores = empty(2 * block, length)
        self.global_probs = empty(2 * block, length, kind=wide)
        self.lanes = empty(max(rows * block * keys, 2 * block * length) // 4 + 1, kind=torch.int64)
        if backward:
            self.grad_probs = empty(rows, block, keys, kind=wide)
            self.grad_gathered = empty(rows, keys, dim)
            self.block_sum = empty(length // block, block, dim)


def _keep(scratch: _Scratch, shape: torch.Size, threshold: int, out: torch.Tensor) -> torch.Tensor:
    """Draw a uint8 keep-mask (1 = kept) into ``out`` from torch's RNG, like ``nn.Dropout``.

    16-bit lanes of int64 draws cost half of ``bernoulli_``; multiplying by a uint8 mask is ~6x
    faster than ``masked_fill_`` with a bool one (0.30 vs 1.84 ms on one pair's scores).
    """
    numel = shape.numel()
    lanes = scratch.lanes[: (numel + 3) // 4]
    torch.randint(-(2**63), 2**63 - 1, lanes.shape, dtype=torch.int64, out=lanes)
    torch.ge(lanes.view(torch.int16)[:numel].view(shape), threshold, out=out.view(torch.bool))
    return out


def _softmax_into(scores: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    source = scores if scores.dtype == out.dtype else scores.to(out.dtype)
    return torch.ops.aten._softmax.out(source, -1, False, out=out)


class _Pair:
    """The strided views of one (batch, head) pair."""

    def __init__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, b: int, h: int,
                 block: int, index: torch.Tensor) -> None:
        length, dim = query.shape[2], query.shape[3]
        self.nb, self.block, self.dim = length // block, block, dim
        self.rows = self.nb - 2
        self.q, self.k, self.v = query[b, h], key[b, h], value[b, h]  # (N, D), rows strided by H*D
        self.flat_index = index[h].reshape(-1)

    def blocks(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(self.nb, self.block, self.dim)

    def gather(self, tensor: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(nb-2, S*b, D): each middle query block's key (or value) blocks, in slot order."""
        torch.index_select(self.blocks(tensor), 0, self.flat_index, out=out)
        return out.view(self.rows, -1, self.dim)

    def global_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor[: self.block], tensor[-self.block :]])  # (2b, D)

    def middle_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.blocks(tensor)[1:-1]  # (nb-2, b, D)


#: the kernel is a torch.library custom op: torch.compile keeps it as one opaque call (no graph
#: break) and compiles everything around it; eager calls pay one dispatch (~20 us)
Tensor = torch.Tensor


@torch.library.custom_op("bigbird_ft::block_sparse_forward", mutates_args=())
def _forward(
    query: Tensor, key: Tensor, value: Tensor, index: Tensor, bias: Tensor, key_bias: Tensor | None,
    query_valid: Tensor | None, block: int, dropout_p: float, keep_masks: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> the context in (B, N, H, D) memory and the dropout keep-masks (empty without dropout;
    one pair's worth when ``keep_masks`` is False, i.e. no backward will follow)."""
    batch, heads, length, dim = query.shape
    nb, slots = length // block, index.shape[-1]
    rows, keys = nb - 2, slots * block
    scale = dim**-0.5
    dropout = dropout_p > 0
    threshold, rescale = dropout_threshold(dropout_p) if dropout else (0, 1.0)
    scratch = _Scratch(rows, keys, block, length, dim, query.dtype, query.device, backward=False)
    out = torch.empty(batch, length, heads, dim, dtype=query.dtype, device=query.device)
    out_heads = out.permute(0, 2, 1, 3)
    pairs = batch * heads if keep_masks else 1
    # two distinct tensors: a custom op's outputs may not alias each other
    keep_mid, keep_glob = (torch.empty(0, dtype=torch.uint8, device=query.device) for _ in range(2))
    if dropout:
        keep_mid = torch.empty(pairs, rows, block, keys, dtype=torch.uint8, device=query.device)
        keep_glob = torch.empty(pairs, 2 * block, length, dtype=torch.uint8, device=query.device)
    for b in range(batch):
        for h in range(heads):
            n = b * heads + h if keep_masks else 0
            pair = _Pair(query, key, value, b, h, block, index)
            # global rows: first and last query block against every key
            scores = torch.mm(pair.global_rows(pair.q), pair.k.t(), out=scratch.global_scores)
            if key_bias is not None:
                scores.mul_(scale).add_(key_bias[b])
            else:
                scores.mul_(scale)
            probs = _softmax_into(scores, scratch.global_probs)
            if dropout:
                probs.mul_(_keep(scratch, probs.shape, threshold, keep_glob[n]))
            context = torch.mm(probs.to(query.dtype), pair.v)
            if dropout:
                context.mul_(rescale)
            out_heads[b, h, :block] = context[:block]
            out_heads[b, h, -block:] = context[block:]
            # middle rows: their gathered key blocks
            pair_bias = bias[b if bias.shape[0] > 1 else 0, h][:, None, :]
            scores = torch.baddbmm(pair_bias.to(query.dtype), pair.middle_rows(pair.q),
                                   pair.gather(pair.k, scratch.keys).transpose(1, 2), alpha=scale,
                                   out=scratch.scores)
            probs = _softmax_into(scores, scratch.probs)
            if dropout:
                probs.mul_(_keep(scratch, probs.shape, threshold, keep_mid[n]))
            context = torch.bmm(probs.to(query.dtype), pair.gather(pair.v, scratch.values))
            if dropout:
                context.mul_(rescale)
            out_heads[b, h, block:-block] = context.view(-1, dim)
    if query_valid is not None:
        # HF zeroes the context of padded queries (its from_mask); keeps padded outputs identical
        out.mul_(query_valid[:, :, None, None].to(out.dtype))
    return out, keep_mid, keep_glob



@_forward.register_fake
def _forward_fake(query: Tensor, key: Tensor, value: Tensor, index: Tensor, bias: Tensor,
                  key_bias: Tensor | None, query_valid: Tensor | None, block: int, dropout_p: float,
                  keep_masks: bool) -> tuple[Tensor, Tensor, Tensor]:
    batch, heads, length, dim = query.shape
    rows, keys = length // block - 2, index.shape[-1] * block
    pairs = batch * heads if keep_masks else 1
    masks = ((pairs, rows, block, keys), (pairs, 2 * block, length)) if dropout_p > 0 else ((0,), (0,))
    return (query.new_empty(batch, length, heads, dim),
            *(query.new_empty(shape, dtype=torch.uint8) for shape in masks))


@torch.library.custom_op("bigbird_ft::block_sparse_backward", mutates_args=())
def _backward(
    grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, index: Tensor, bias: Tensor,
    key_bias: Tensor | None, query_valid: Tensor | None, out: Tensor, keep_mid: Tensor, keep_glob: Tensor,
    block: int, dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_out`` and the returned gradients of q, k, v in (B, N, H, D) memory."""
    batch, heads, length, dim = query.shape
    nb, slots = length // block, index.shape[-1]
    rows, keys = nb - 2, slots * block
    scale = dim**-0.5
    dropout = dropout_p > 0
    rescale = dropout_threshold(dropout_p)[1] if dropout else 1.0
    scratch = _Scratch(rows, keys, block, length, dim, query.dtype, query.device, backward=True)
    out_heads = out.permute(0, 2, 1, 3)
    if query_valid is not None:
        grad_out = grad_out * query_valid[:, :, None, None].to(grad_out.dtype)
    grad_out = grad_out.permute(0, 2, 1, 3)
    # every element is written once (no zero fill): the global rows' products cover all N keys
    grads = [torch.empty(batch, length, heads, dim, dtype=t.dtype, device=t.device) for t in (query, key, value)]
    grad_q, grad_k, grad_v = (g.permute(0, 2, 1, 3) for g in grads)
    wide = scratch.probs.dtype
    for b in range(batch):
        for h in range(heads):
            n = b * heads + h
            pair = _Pair(query, key, value, b, h, block, index)
            g_out, o = grad_out[b, h], out_heads[b, h]
            gk, gv = grad_k[b, h], grad_v[b, h]

            # global rows
            q_glob, g_glob, o_glob = pair.global_rows(pair.q), pair.global_rows(g_out), pair.global_rows(o)
            scores = torch.mm(q_glob, pair.k.t(), out=scratch.global_scores).mul_(scale)
            if key_bias is not None:
                scores.add_(key_bias[b])
            probs = _softmax_into(scores, scratch.global_probs)
            grad_probs = torch.mm(g_glob, pair.v.t(), out=scratch.global_scores)
            grad_probs = grad_probs if grad_probs.dtype == wide else grad_probs.to(wide)
            if dropout:
                grad_probs.mul_(keep_glob[n]).mul_(rescale)
            row = (g_glob.to(wide) * o_glob.to(wide)).sum(dim=-1, keepdim=True)
            # softmax backward: p * (dP - rowsum(dP * p)), and rowsum(dP * p) = rowsum(grad_out * out)
            grad_scores = grad_probs.sub_(row).mul_(probs).to(query.dtype)
            if dropout:
                probs.mul_(keep_glob[n])
            gv.copy_(torch.mm(probs.to(query.dtype).t(), g_glob).mul_(rescale) if dropout
                     else torch.mm(probs.to(query.dtype).t(), g_glob))
            grad_q_glob = torch.mm(grad_scores, pair.k).mul_(scale)
            grad_q[b, h, :block] = grad_q_glob[:block]
            grad_q[b, h, -block:] = grad_q_glob[block:]
            gk.copy_(torch.mm(grad_scores.t(), q_glob).mul_(scale))
            del grad_scores

            # middle rows
            q_mid = pair.middle_rows(pair.q)
            g_mid = g_out[block:-block].view(rows, block, dim)
            o_mid = o[block:-block].view(rows, block, dim)
            k_gath, v_gath = pair.gather(pair.k, scratch.keys), pair.gather(pair.v, scratch.values)
            pair_bias = bias[b if bias.shape[0] > 1 else 0, h][:, None, :]
            scores = torch.baddbmm(pair_bias.to(query.dtype), q_mid, k_gath.transpose(1, 2), alpha=scale,
                                   out=scratch.scores)
            probs = _softmax_into(scores, scratch.probs)
            # beta=0: the out buffer's old contents are ignored; alpha folds the dropout rescale in
            grad_probs = torch.baddbmm(scratch.scores, g_mid, v_gath.transpose(1, 2), beta=0, alpha=rescale,
                                       out=scratch.scores)
            grad_probs = grad_probs if grad_probs.dtype == wide else scratch.grad_probs.copy_(grad_probs)
            if dropout:
                grad_probs.mul_(keep_mid[n])
            row = (g_mid.to(wide) * o_mid.to(wide)).sum(dim=-1, keepdim=True)
            grad_scores = grad_probs.sub_(row).mul_(probs)
            grad_scores = grad_scores if grad_scores.dtype == query.dtype else grad_scores.to(query.dtype)
            if dropout:
                probs.mul_(keep_mid[n])
            grad_v_gath = torch.baddbmm(scratch.grad_gathered, probs.to(query.dtype).transpose(1, 2), g_mid,
                                        beta=0, alpha=rescale, out=scratch.grad_gathered)
            _scatter_blocks(pair, gv, grad_v_gath, scratch.block_sum)
            grad_q[b, h, block:-block] = torch.baddbmm(q_mid, grad_scores, k_gath, beta=0,
                                                       alpha=scale).view(-1, dim)
            grad_k_gath = torch.baddbmm(scratch.grad_gathered, grad_scores.transpose(1, 2), q_mid, beta=0,
                                        alpha=scale, out=scratch.grad_gathered)
            _scatter_blocks(pair, gk, grad_k_gath, scratch.block_sum)
    return grads[0], grads[1], grads[2]




@_backward.register_fake
def _backward_fake(grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, index: Tensor, bias: Tensor,
                   key_bias: Tensor | None, query_valid: Tensor | None, out: Tensor, keep_mid: Tensor,
                   keep_glob: Tensor, block: int, dropout_p: float) -> tuple[Tensor, Tensor, Tensor]:
    batch, heads, length, dim = query.shape
    return tuple(t.new_empty(batch, length, heads, dim) for t in (query, key, value))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    query, key, value, index, bias, key_bias, query_valid, block, dropout_p, _ = inputs
    out, keep_mid, keep_glob = output
    ctx.save_for_backward(query, key, value, index, bias, key_bias, query_valid, out, keep_mid, keep_glob)
    ctx.block, ctx.dropout_p = block, dropout_p


def _autograd_backward(ctx: Any, grad_out: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    grads = _backward(grad_out, *ctx.saved_tensors, ctx.block, ctx.dropout_p)
    return (*(g.permute(0, 2, 1, 3) for g in grads), None, None, None, None, None, None, None)


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def _scatter_blocks(pair: _Pair, grad: torch.Tensor, gathered: torch.Tensor, block_sum: torch.Tensor) -> None:
    """Sum the gathered blocks' gradients back onto their key blocks.

    ``index_add_`` into the strided pair view takes a scatter path ~15x slower than into a
    contiguous buffer (1.45 vs 0.08 ms per pair), hence the buffer and one add.
    """
    block_sum.zero_().index_add_(0, pair.flat_index, gathered.view(-1, pair.block, pair.dim))
    pair.blocks(grad).add_(block_sum)


def block_sparse_core(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    index: torch.Tensor,
    slot_valid: torch.Tensor,
    key_valid: torch.Tensor | None,
    block: int,
    dropout_p: float,
) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, N, D) BigBird attention. ``key_valid (B, N)`` or None (no padding)."""
    with torch.autocast(device_type=query.device.type, enabled=False):
        dtype = torch.promote_types(torch.promote_types(query.dtype, key.dtype), value.dtype)
        query, key, value = (t.to(dtype) if t.stride(-1) == 1 else t.to(dtype).contiguous()
                             for t in (query, key, value))
        bias = middle_bias(index, slot_valid, key_valid, block)
        key_bias = None
        if key_valid is not None:
            key_bias = torch.zeros(key_valid.shape, dtype=torch.float32, device=key_valid.device)
            key_bias.masked_fill_(~key_valid, MASKED)
        keep_masks = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        out = _forward(query, key, value, index, bias, key_bias, key_valid, int(block), float(dropout_p), keep_masks)[0]
        return out.permute(0, 2, 1, 3)
