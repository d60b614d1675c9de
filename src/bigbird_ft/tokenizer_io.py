"""Carry a tokenizer inside a checkpoint, so ``load_from_checkpoint`` needs no other file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase


def tokenizer_to_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_files(files: dict[str, bytes]) -> PreTrainedTokenizerBase:
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        return AutoTokenizer.from_pretrained(tmp)
