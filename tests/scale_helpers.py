"""Callbacks the scale tests inject with ``+callbacks.NAME._target_=tests.scale_helpers.X``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class RecordRows(L.Callback):
    """Writes the training rows each rank saw per epoch to ``<dir>/rows-rank<R>.json``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["row"].tolist())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        out = self.dirpath / f"rows-rank{trainer.global_rank}.json"
        out.write_text(json.dumps({"world": trainer.world_size, "epochs": self.seen}))


class KillAtStep(L.Callback):
    """SIGKILLs its own process once ``global_step`` reaches ``step`` (a crash without cleanup)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
