"""Confusion-matrix and reliability figures: PNGs in the run dir, images for loggers that take them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io_utils import atomic_path

log = logging.getLogger(__name__)


def confusion_figure(matrix: torch.Tensor, labels: Sequence[str], title: str) -> Any:
    """A matplotlib figure of counts (rows = true label, columns = predicted)."""
    # a bare Figure (no pyplot): no GUI backend, no global state, safe on a headless node
    from matplotlib.figure import Figure

    size = max(4.0, 0.6 * len(labels) + 2.0)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    counts = matrix.numpy()
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), value in _cells(counts):
        ax.text(col, row, str(int(value)), ha="center", va="center",
                color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def _cells(counts: Any) -> list[tuple[tuple[int, int], float]]:
    return [((r, c), counts[r, c]) for r in range(counts.shape[0]) for c in range(counts.shape[1])]


def log_figure(loggers: Sequence[Any], tag: str, fig: Any, step: int) -> None:
    """W&B-style ``log_image`` where present, TensorBoard's ``add_figure`` otherwise; CSV gets none."""
    for logger in loggers:
        try:
            if hasattr(logger, "log_image"):
                logger.log_image(key=tag, images=[fig], step=step)
            elif hasattr(getattr(logger, "experiment", None), "add_figure"):
                logger.experiment.add_figure(tag, fig, global_step=step)
        except Exception as err:  # a logger's image upload must never end a training run
            log.warning(f"could not log {tag} to {type(logger).__name__}: {err}")


def save_confusion_matrix(
    matrix: torch.Tensor,
    labels: Sequence[str],
    run_dir: str | Path,
    stage: str,
    loggers: Sequence[Any] = (),
    step: int = 0,
) -> Path | None:
    """Write ``confusion_matrix_<stage>.png`` atomically into ``run_dir`` and log it as an image."""
    try:
        fig = confusion_figure(matrix, labels, f"{stage} confusion matrix")
    except ImportError:
        log.info("matplotlib is not installed: no confusion-matrix PNG (pip install matplotlib)")
        return None
    target = Path(run_dir) / f"confusion_matrix_{stage}.png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    log_figure(loggers, f"{stage}/confusion_matrix", fig, step)
    return target


def plot_confusion(module: Any, stage: str) -> None:
    """The stage's confusion matrix, computed on every rank (it syncs), drawn on rank 0 after sanity checks."""
    confusion = getattr(module, f"{stage}_confusion")
    if confusion is None:
        return
    matrix = confusion.compute()
    confusion.reset()
    trainer = module.trainer
    if trainer.is_global_zero and not trainer.sanity_checking:
        labels = [module.id2label[i] for i in range(module.num_labels)]
        save_confusion_matrix(matrix.cpu(), labels, trainer.default_root_dir, stage, trainer.loggers, module.global_step)


def save_reliability_diagram(
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]], run_dir: str | Path, title: str, bins: int = 15
) -> Path | None:
    """``reliability.png``: per confidence bin, the accuracy against the mean confidence, one line per
    ``{name: (probs, labels)}``; a calibrated model lies on the diagonal."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no reliability PNG (pip install matplotlib)")
        return None
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for name, (probs, labels) in curves.items():
        confidence, predicted = probs.float().max(-1)
        correct = (predicted == labels).float()
        which = (confidence * bins).long().clamp(max=bins - 1)
        xs, ys = [], []
        for b in range(bins):
            members = which == b
            if members.any():
                xs.append(float(confidence[members].mean()))
                ys.append(float(correct[members].mean()))
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    target = Path(run_dir) / "reliability.png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return target
