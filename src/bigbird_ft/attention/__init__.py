"""Attention backends: importing this package registers every backend module."""

from . import (
    block_sparse,  # noqa: F401  (registration side effects)
    flex,  # noqa: F401  (registration side effects)
    hf_block_sparse,  # noqa: F401  (registration side effects)
    hf_full,  # noqa: F401  (registration side effects)
    sdpa,  # noqa: F401  (registration side effects)
)
from .base import AttentionBackend
from .registry import available_backends, backend_class, build_backend, register_backend

__all__ = ["AttentionBackend", "available_backends", "backend_class", "build_backend", "register_backend"]
