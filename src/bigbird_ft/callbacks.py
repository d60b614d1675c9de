"""Callbacks the LightningModule brings along (``configure_callbacks``): throughput and encoder freezing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_info

#: batches in the rolling throughput average (Lightning's default of 100 outlasts a short run)
THROUGHPUT_WINDOW = 4


def batch_size(batch: Mapping[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def real_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Unpadded tokens: ``train/device/items_per_sec`` is then real tokens per second."""
    return int(batch["attention_mask"].sum())


def token_throughput() -> ThroughputMonitor:
    return ThroughputMonitor(batch_size_fn=batch_size, length_fn=real_tokens, window_size=THROUGHPUT_WINDOW)


class FreezeEncoder(L.Callback):
    """``optim.freeze_encoder_epochs=N``: train the new head alone for N epochs, then everything.

    Hand-written rather than ``BaseFinetuning``: that one adds the unfrozen parameters to the
    optimizer as a new group at unfreeze time, which would lose the layer-wise LR groups; here every
    parameter is in the optimizer from the start and a frozen one simply gets no gradient.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        frozen = trainer.current_epoch < self.epochs
        pl_module.model.encoder.requires_grad_(not frozen)
        if frozen or trainer.current_epoch == self.epochs:
            rank_zero_info(f"Epoch {trainer.current_epoch}: encoder {'frozen' if frozen else 'unfrozen'}")
