"""Name -> backend class. Adding a backend = one module + one yaml under conf/attention/ + a test."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .base import AttentionBackend

_BACKENDS: dict[str, type[AttentionBackend]] = {}


def register_backend(name: str):
    def decorator(cls: type[AttentionBackend]) -> type[AttentionBackend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorator


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[AttentionBackend]:
    if name not in _BACKENDS:
        raise UserError(
            f"unknown attention backend '{name}'; set attention= to one of {', '.join(available_backends())}"
        )
    return _BACKENDS[name]


def build_backend(name: str, **kwargs: Any) -> AttentionBackend:
    return backend_class(name)(**kwargs)
