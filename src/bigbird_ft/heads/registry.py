"""Name -> head class. Adding a head = one module + one yaml under conf/head/ + a test."""

from __future__ import annotations

from ..config import Registry
from .base import Head

HEADS: Registry[Head] = Registry("head", "head")
register_head = HEADS.register
available_heads = HEADS.names
head_class = HEADS.get
build_head = HEADS.build
