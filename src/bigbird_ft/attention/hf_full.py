"""HF's dense attention (``attention_type="original_full"``): the reference, O(n^2) memory."""

from __future__ import annotations

from .base import AttentionBackend
from .registry import register_backend


@register_backend("hf_full")
class HFFullAttention(AttentionBackend):
    hf_attention_type = "original_full"
