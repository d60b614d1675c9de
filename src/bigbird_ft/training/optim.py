"""The optimizer recipe: AdamW parameter groups (no decay on bias/LayerNorm, layer-wise LR decay, a head LR),
the fused-kernel choice, and the warmup schedule from ``transformers.get_scheduler``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

from ..errors import UserError

NO_DECAY_KEYWORDS = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight")
LAYER_PATTERN = re.compile(r"^encoder\.encoder\.layer\.(\d+)\.")
SCHEDULERS = ("linear", "cosine", "constant")


def parameter_groups(model: nn.Module, optim: Mapping[str, Any], num_layers: int) -> list[dict[str, Any]]:
    """AdamW groups of a ``LongDocumentClassifier``'s trainable parameters.

    With ``optim.layerwise_lr_decay=d`` and L encoder layers, layer i (0-based) gets lr*d^(L-i),
    the embeddings lr*d^(L+1), BigBird's pooler lr; the head (and ``reader=hierarchical``'s document layer) gets ``optim.head_lr`` (else lr).
    """
    lr = float(optim["lr"])
    head_lr = float(optim["head_lr"]) if optim.get("head_lr") is not None else lr
    decay = float(optim.get("layerwise_lr_decay") or 1.0)
    weight_decay = float(optim.get("weight_decay", 0.01))

    def scope(name: str) -> tuple[str, float]:
        if name.startswith(("head.", "document_layer.")):  # new weights (reader=hierarchical's layer too)
            return "head", head_lr
        if name.startswith("encoder.embeddings."):
            return "embeddings", lr * decay ** (num_layers + 1)
        match = LAYER_PATTERN.match(name)
        if match:
            layer = int(match.group(1))
            return f"layer_{layer}", lr * decay ** (num_layers - layer)
        return ("pooler" if name.startswith("encoder.") else "other"), lr

    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group_name, group_lr = scope(name)
        no_decay = any(k in name for k in NO_DECAY_KEYWORDS)
        key = f"{group_name}/no_decay" if no_decay else group_name
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": group_lr, "weight_decay": 0.0 if no_decay else weight_decay}
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, optim: Mapping[str, Any], num_layers: int,
                    precision: str = "32-true", gradient_clip_val: float | None = None) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups``; fused kernel where torch has one (what HF Trainer picks).

    ``optim.fused=null`` means: fused when every parameter is a float tensor on CPU or CUDA and
    no mixed precision clips gradients (Lightning cannot clip before a fused step unscales them).
    One kernel launch per step instead of a loop over tensors (measured in bench/overhead.py).
    """
    fused = optim.get("fused")
    amp_clipping = bool(str(precision).endswith("-mixed") and gradient_clip_val)
    if fused is None:
        fused = not amp_clipping and all(
            p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in model.parameters()
        )
    elif fused and amp_clipping:
        raise UserError(
            f"optim.fused=true cannot clip gradients under trainer.precision={precision}; "
            "set optim.fused=null or trainer.gradient_clip_val=null"
        )
    return torch.optim.AdamW(
        parameter_groups(model, optim, num_layers),
        lr=float(optim["lr"]),
        betas=tuple(optim.get("betas", (0.9, 0.999))),
        eps=float(optim.get("eps", 1e-8)),
        fused=bool(fused),
    )


def optimizer_config(optimizer: torch.optim.Optimizer, optim: Mapping[str, Any], total_steps: int) -> dict[str, Any]:
    """What ``configure_optimizers`` returns: the optimizer and a per-step warmup schedule."""
    schedule = optim.get("scheduler", "linear")
    if schedule not in SCHEDULERS:
        raise UserError(f"unknown optim.scheduler '{schedule}'; use {', '.join(SCHEDULERS[:-1])} or constant")
    if schedule == "constant":
        return {"optimizer": optimizer}
    warmup_steps = int(float(optim.get("warmup_ratio", 0.1)) * total_steps)
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
