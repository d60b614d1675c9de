"""Full attention through ``torch.nn.functional.scaled_dot_product_attention``.

Same result as HF's ``original_full`` but with fused kernels (flash attention on CPU and GPU) and
a broadcast (B, 1, 1, N) key-padding mask instead of HF's materialised (B, 1, N, N) additive mask.
Memory is O(N) with the fused kernels; with attention dropout in training PyTorch falls back to
its math kernel, which holds the (B, H, N, N) probabilities.
"""

from __future__ import annotations

from .patched import PatchedBackend
from .registry import register_backend


@register_backend("sdpa")
class SdpaAttention(PatchedBackend):
    """Dense attention for every length; also the short-batch path of block_sparse and flex."""
