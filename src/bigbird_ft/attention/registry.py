"""Name -> backend class. Adding a backend = one module + one yaml under conf/attention/ + a test."""

from __future__ import annotations

from ..config import Registry
from .base import AttentionBackend

BACKENDS: Registry[AttentionBackend] = Registry("attention backend", "attention")
register_backend = BACKENDS.register
available_backends = BACKENDS.names
backend_class = BACKENDS.get
build_backend = BACKENDS.build
