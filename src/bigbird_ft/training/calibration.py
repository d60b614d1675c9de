"""Temperature scaling (Guo et al., 2017): one scalar fitted on the validation set after training.

Fine-tuned encoders are over-confident; dividing the logits by a temperature T > 1 fitted by
validation NLL fixes most of it without changing a single argmax, so accuracy is untouched. T lives
in the model (``LongDocumentClassifier.temperature``), so the checkpoint, predict and the exported
``hf_model/`` (where it is folded into the last layer) all give the calibrated probabilities.
Single-label only: a multi-label model keeps T = 1 (no per-label temperatures), regression has no
probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.functional.classification import multiclass_calibration_error

from ..distributed import gather_objects, world
from .plots import save_reliability_diagram

#: a fitted T outside (1/100, 100) is no temperature but a degenerate fit: a model no better than
#: chance has its NLL optimum at T -> infinity, separable validation logits at T -> 0
TEMPERATURE_RANGE = (1e-2, 1e2)

#: fewer validation documents than this keep T = 1. One scalar fitted by NLL on a handful of
#: documents follows their few errors: with 6 documents T = 0.06 made test ECE 0.021 -> 0.141. The
#: simulation in bench/calibration_min_docs.py (bench/results/calibration_min_docs.json) measures how
#: often a fit on N documents makes the held-out NLL worse than T = 1.
MIN_CALIBRATION_DOCUMENTS = 50

#: why T is what it is: written to metrics.json as ``val/temperature_reason``
TEMPERATURE_REASONS = {
    "fitted": "fitted",
    "too_few_documents": f"kept at 1: fewer than {MIN_CALIBRATION_DOCUMENTS} validation documents",
    "all_correct": "kept at 1: every validation document is predicted right, so no temperature can be fitted",
    "at_bound": "kept at 1: the fit left the range (1/100, 100), as for a model no better than chance",
    "nll_not_lower": "kept at 1: the fitted temperature did not lower the validation NLL",
}

#: equal-width confidence bins of the expected calibration error (the paper's and torchmetrics' 15)
ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the NLL of ``softmax(logits / T)``; log T is fitted so T stays positive.

    Unclamped: ``choose_temperature`` decides what a T outside ``TEMPERATURE_RANGE`` means."""
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def choose_temperature(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, str]:
    """(T, why): the fitted T only where it can be trusted, else T = 1.

    Kept at 1 when the validation split has fewer than ``MIN_CALIBRATION_DOCUMENTS`` documents, when every
    validation document is predicted right (no finite optimum: the NLL keeps falling as T -> 0), when the
    fit leaves ``TEMPERATURE_RANGE`` (a model at chance: optimum T -> infinity), or when it does not lower
    the validation NLL.
    """
    if len(labels) < MIN_CALIBRATION_DOCUMENTS:
        return 1.0, "too_few_documents"
    if bool((logits.argmax(-1) == labels).all()):
        # the NLL then falls towards 0 as T -> 0: the fit stops wherever its tolerance says
        return 1.0, "all_correct"
    temperature = fit_temperature(logits, labels)
    low, high = TEMPERATURE_RANGE
    if not low < temperature < high:
        return 1.0, "at_bound"
    logits, labels = logits.double(), labels.long()
    if F.cross_entropy(logits / temperature, labels) >= F.cross_entropy(logits, labels):
        return 1.0, "nll_not_lower"
    return temperature, "fitted"


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over documents of the squared distance to the one-hot label (torchmetrics has no multiclass one)."""
    onehot = F.one_hot(labels.long(), probs.shape[-1]).to(probs.dtype)
    return ((probs - onehot) ** 2).sum(-1).mean()


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    """ECE and Brier of the raw (``*_uncalibrated``) and the temperature-scaled probabilities."""
    out = {}
    for suffix, scale in (("", temperature), ("_uncalibrated", 1.0)):
        probs = (logits.float() / scale).softmax(-1)
        out[f"ece{suffix}"] = float(multiclass_calibration_error(probs, labels, probs.shape[-1], n_bins=ECE_BINS))
        out[f"brier{suffix}"] = float(brier_score(probs, labels))
    return out


class TemperatureScaling(L.Callback):
    """Temperature scaling as a callback: T is fitted on every validation pass of ``fit`` and written
    into the checkpoints saved after that pass (Lightning's ``on_save_checkpoint``), so each
    checkpoint, the best one included, carries the T of its own weights; the module trains at T = 1.

    On the validate and test passes after fit (the best checkpoint loaded, with its T), it measures
    ECE and Brier before and after T (``report``) and draws ``reliability.png``. ``fit=False``
    (``calibrate=false``, or evaluating a checkpoint) measures the checkpoint's T as it is.
    """

    def __init__(self, fit: bool = True, run_dir: str | Path | None = None) -> None:
        self.fit, self.run_dir = fit, Path(run_dir) if run_dir is not None else None
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.temperature, self.reason = 1.0, "not_fitted"
        self.fitted: list[tuple[float, str]] = []  # (T, why) of each validation pass of fit
        self.report: dict[str, Any] = {}

    # ------------------------------------------------------------ collect
    def _collect(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "logits" not in outputs:
            return
        # the module's current T multiplied back: always the raw logits
        self.logits.append((outputs["logits"].detach().float() * pl_module.model.temperature.float()).cpu())
        self.labels.append(batch["labels"].detach().cpu())

    def _result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' rows (each rank read its own share of the split), on every rank."""
        mine = (torch.cat(self.logits), torch.cat(self.labels))
        self.logits, self.labels = [], []
        parts = gather_objects(mine)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        pl_module.model.temperature.fill_(1.0)  # a resumed checkpoint's T must not scale the training logits

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(trainer, pl_module, outputs, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(trainer, pl_module, outputs, batch)

    # ------------------------------------------------------ fit and report
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not self.logits:
            return
        logits, labels = self._result()
        if trainer.state.fn == "fit":
            if self.fit:
                self.temperature, self.reason = choose_temperature(logits, labels)
                self.fitted.append((self.temperature, self.reason))
            return
        temperature = float(pl_module.model.temperature)
        if self.fitted:
            # the reason that went with the loaded checkpoint's T (the best epoch's, not the last one's)
            matching = [r for t, r in self.fitted if abs(t - temperature) <= 1e-6 * max(t, 1.0)]
            reason = matching[-1] if matching else self.reason
            what = "fitted" if reason == "fitted" else TEMPERATURE_REASONS[reason]
            rank_zero_info(f"Calibration: temperature {temperature:.4f} ({what}; {len(labels)} validation documents)")
            self.report["val/temperature_reason"] = reason
        self._measure("val", logits, labels, temperature)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.logits:
            self._measure("test", *self._result(), float(pl_module.model.temperature))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.fit and trainer.state.fn == "fit":
            checkpoint["state_dict"]["model.temperature"] = torch.tensor(self.temperature)

    def _measure(self, stage: str, logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> None:
        """ECE/Brier of one evaluated split, before and after T; ``reliability.png`` shows the last one
        measured (test when there is one)."""
        values = {f"{stage}/{k}": v for k, v in calibration_metrics(logits, labels, temperature).items()}
        self.report.update(values)
        if stage == "val":
            self.report["val/temperature"] = temperature
        if world()[0] == 0 and self.run_dir is not None:
            curves = {f"T = 1 (ECE {values[f'{stage}/ece_uncalibrated']:.3f})": (logits.softmax(-1), labels),
                      f"T = {temperature:.2f} (ECE {values[f'{stage}/ece']:.3f})": (
                          (logits / temperature).softmax(-1), labels)}
            save_reliability_diagram(curves, self.run_dir, f"{stage} reliability ({len(labels)} documents)")


