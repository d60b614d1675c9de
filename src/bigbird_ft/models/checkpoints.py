"""Checkpoint files: which one a run dir means, what ours carry besides the weights, how older ones load.

One resolver for ``run_dir=`` / ``ckpt_path=`` serves train (resume, evaluate), predict and export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..errors import UserError
from .tokenizer import tokenizer_from_files, tokenizer_to_files

#: the module held encoder/backend/head itself before ``model.py``: their checkpoint keys gain ``model.``
OLD_KEY_PREFIXES = ("encoder.", "head.")


def find_checkpoint(run_dir: str | Path | None = None, ckpt_path: str | Path | None = None,
                    resume: bool = False) -> Path:
    """The one reading of ``run_dir=`` / ``ckpt_path=`` for every entry point.

    A run dir means its best checkpoint (the one ``ModelCheckpoint`` kept), or ``last.ckpt`` when it
    kept none (``debug=fdr``) or when resuming (``resume``: training goes on from where it stopped).
    ``ckpt_path`` may name a file or a run dir; a missing one is one line naming the key.
    """
    key, value = ("ckpt_path", ckpt_path) if ckpt_path else ("run_dir", run_dir)
    if not value:
        raise UserError("no model given; set run_dir=<a train run dir> or ckpt_path=<file.ckpt>")
    path = Path(str(value)).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"checkpoint not found: {path}; fix {key} (a .ckpt file or a train run dir)")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith("last"))
    lasts = sorted(folder.glob("last*.ckpt"))
    if len(best) > 1 or len(lasts) > 1:
        # two runs in one folder (last-v1.ckpt, epoch_000-v1.ckpt) or save_top_k > 1: which is meant is a guess
        names = ", ".join(p.name for p in [*best, *lasts][:6])
        raise UserError(f"{folder} holds several checkpoints ({names}); set ckpt_path to the one to use")
    if best and not resume:
        return best[0]
    if lasts:
        return lasts[0]
    raise UserError(f"no checkpoint in {folder}; fix {key} (a .ckpt file or a train run dir)")


def add_extras(checkpoint: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> None:
    """What a checkpoint carries besides the weights: the tokenizer's files, so it alone rebuilds the
    model; and no pretrained source to fetch again (the weights are in the state dict)."""
    checkpoint["hyper_parameters"]["init_weights_from"] = None
    if tokenizer is not None:
        checkpoint["tokenizer_files"] = tokenizer_to_files(tokenizer)


def read_extras(checkpoint: dict[str, Any]) -> PreTrainedTokenizerBase | None:
    """The checkpoint's tokenizer; older layouts are brought up to date in place (keys without the
    ``model.`` prefix, no temperature: theirs is 1)."""
    state = checkpoint.get("state_dict", {})
    if any(key.startswith(OLD_KEY_PREFIXES) for key in state):
        checkpoint["state_dict"] = state = {f"model.{k}" if k.startswith(OLD_KEY_PREFIXES) else k: v
                                            for k, v in state.items()}
    state.setdefault("model.temperature", torch.tensor(1.0))
    return tokenizer_from_files(checkpoint["tokenizer_files"]) if "tokenizer_files" in checkpoint else None
