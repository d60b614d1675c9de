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

from .distributed import gather_objects, world
from .errors import UserError
from .io_utils import atomic_path
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


class CollectLogits(L.Callback):
    """The uncalibrated logits and labels of one validate/test pass, from every rank.

    The module's eval steps return their logits; the module's current temperature is multiplied
    back so these are always the raw logits.
    """

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def _collect(self, pl_module: Any, outputs: Any, batch: Any) -> None:
        if isinstance(outputs, dict) and "logits" in outputs:
            raw = outputs["logits"].detach().float() * pl_module.model.temperature.float()
            self.logits.append(raw.cpu())
            self.labels.append(batch["labels"].detach().cpu())

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._collect(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(pl_module, outputs, batch)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' rows (each rank read its own share of the split), on every rank."""
        mine = (torch.cat(self.logits), torch.cat(self.labels))
        parts = gather_objects(mine)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def store_temperature(checkpoint: str | Path, temperature: float) -> None:
    """Write T into a saved checkpoint (the best one, which predict and export read)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["state_dict"]["model.temperature"] = torch.tensor(temperature)
    with atomic_path(Path(checkpoint)) as tmp:
        torch.save(state, tmp)


def check_calibrate(cfg: Any) -> None:
    """A calibration that cannot run fails before training, not after it."""
    value = cfg.get("calibrate", False)
    if not isinstance(value, bool):
        raise UserError(f"calibrate={value} is not true or false: fix calibrate")
    if value and cfg.get("train", True) and cfg.trainer.get("limit_val_batches", 1.0) in (0, 0.0):
        raise UserError("calibrate=true fits a temperature on the validation split, which "
                        "trainer.limit_val_batches=0 turns off: set calibrate=false or drop limit_val_batches")


def report(stage: str, collector: CollectLogits, module: Any, run_dir: Path, fit: bool = False,
           checkpoint: str | None = None) -> dict[str, Any]:
    """ECE/Brier of one evaluated split, before and after scaling; with ``fit`` first fits T on it.

    ``reliability.png`` shows the last split reported (test when there is one).
    """
    logits, labels = collector.result()
    collector.logits, collector.labels = [], []
    reason = None
    if fit:
        temperature, reason = choose_temperature(logits, labels)
        module.model.temperature.fill_(temperature)
        if checkpoint and world()[0] == 0:
            store_temperature(checkpoint, temperature)
        what = "fitted" if reason == "fitted" else TEMPERATURE_REASONS[reason]
        rank_zero_info(f"Calibration: temperature {temperature:.4f} ({what}; {len(labels)} validation documents)")
    temperature = float(module.model.temperature)
    values: dict[str, Any] = {f"{stage}/{k}": v for k, v in calibration_metrics(logits, labels, temperature).items()}
    if reason is not None:
        values["val/temperature_reason"] = reason
    if world()[0] == 0:
        curves = {f"T = 1 (ECE {values[f'{stage}/ece_uncalibrated']:.3f})": (logits.softmax(-1), labels),
                  f"T = {temperature:.2f} (ECE {values[f'{stage}/ece']:.3f})": ((logits / temperature).softmax(-1),
                                                                               labels)}
        save_reliability_diagram(curves, run_dir, f"{stage} reliability ({len(labels)} documents)")
    return {**({"val/temperature": temperature} if stage == "val" else {}), **values}
