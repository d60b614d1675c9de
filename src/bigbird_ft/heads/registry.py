"""Name -> head class. Adding a head = one module + one yaml under conf/head/ + a test."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .base import Head

_HEADS: dict[str, type[Head]] = {}


def register_head(name: str):
    def decorator(cls: type[Head]) -> type[Head]:
        cls.name = name
        _HEADS[name] = cls
        return cls

    return decorator


def available_heads() -> list[str]:
    return sorted(_HEADS)


def head_class(name: str) -> type[Head]:
    if name not in _HEADS:
        raise UserError(f"unknown head '{name}'; set head= to one of {', '.join(available_heads())}")
    return _HEADS[name]


def build_head(name: str, hidden_size: int, num_labels: int, **kwargs: Any) -> Head:
    return head_class(name)(hidden_size=hidden_size, num_labels=num_labels, **kwargs)
