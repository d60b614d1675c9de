"""Classification heads: importing this package registers every head module."""

from . import (
    attention,  # noqa: F401  (registration side effects)
    cls,  # noqa: F401  (registration side effects)
    max,  # noqa: F401  (registration side effects)
    mean,  # noqa: F401  (registration side effects)
    pooler,  # noqa: F401  (registration side effects)
    span,  # noqa: F401  (registration side effects)
    token,  # noqa: F401  (registration side effects)
)
from .base import ClassifierMLP, Head
from .registry import available_heads, build_head, head_class, register_head

__all__ = ["ClassifierMLP", "Head", "available_heads", "build_head", "head_class", "register_head"]
