"""Instantiate the optional lists of callbacks and loggers from their config groups."""

from __future__ import annotations

from typing import Any

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def _instantiate_all(cfg: DictConfig | None) -> list[Any]:
    if not cfg:
        return []
    return [hydra.utils.instantiate(entry) for entry in cfg.values() if entry and "_target_" in entry]


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_all(cfg)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_all(cfg)
