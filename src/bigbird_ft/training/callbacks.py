"""Callbacks the LightningModule brings along (``configure_callbacks``): throughput, encoder freezing
and what an exact mid-epoch resume needs."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
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


class ExactResume(L.Callback):
    """A run resumed mid-epoch from a checkpoint ends with the uninterrupted run's weights.

    Two things Lightning does not restore: the random state (dropout masks), which it does not save,
    and the training loader's position in the epoch, which it saves (``ResumableLoader.state_dict``)
    but only loads when the loader is built after the restore; ``configure_optimizers`` builds it
    before (``estimated_stepping_batches`` sizes the schedule), so the resumed epoch would replay
    its first batches. The random state is set at the first training batch, not at load time:
    building the loader iterators in between draws from torch's generator, which the uninterrupted
    run did before its checkpoint.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # plain tensors and tuples only, so a checkpoint still loads with weights_only=True
        name, keys, pos, has_gauss, cached = np.random.get_state()
        numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
        return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate(),
                **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._pending is not None:
            # Lightning's own loader-state load, at the point it would have run had the loader been
            # built after the restore (a no-op when there is nothing to load)
            trainer.fit_loop._load_combined_loader_states()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_initialized():
            torch.cuda.set_rng_state_all(state["cuda"])
