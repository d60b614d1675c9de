"""Pre-flight: everything about a training config that can be known wrong before data is read.

Each check ends the run with one line naming the key to change (a ``UserError``); ``check_config``
runs them all, so ``train()`` makes one call.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from ..attention.registry import backend_class
from ..errors import UserError
from ..tasks import task_for


def check_config(cfg: DictConfig) -> None:
    for check in (check_trainer, check_run_dir, check_backend_device, check_precision, check_problem_type,
                  check_calibrate, check_evaluation):
        check(cfg)


def trains_on_cpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def check_trainer(cfg: DictConfig) -> None:
    """Settings that would train nothing, or need hardware that is not there."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator={accelerator} but no GPU is found here; set trainer=cpu (or trainer=default)")
    if not cfg.get("train", True):
        return
    if cfg.trainer.get("max_epochs") == 0 or cfg.trainer.get("max_steps") == 0:
        raise UserError("trainer.max_epochs=0 (or max_steps=0) trains nothing; set it to at least 1, or evaluate a "
                        "checkpoint with train=false ckpt_path=...")


def check_run_dir(cfg: DictConfig) -> None:
    """A run dir that already holds a run's checkpoints is not reused: the two runs' files would mix
    (``last-v1.ckpt`` beside ``last.ckpt``, metrics.json and hf_model/ of the second one only)."""
    if not cfg.get("train", True) or cfg.get("ckpt_path"):
        return
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    if folder.is_dir() and any(folder.glob("*.ckpt")):
        raise UserError(f"{folder.parent} already holds a run's checkpoints; choose a new hydra.run.dir, or "
                        f"resume that run with ckpt_path={folder.parent}")


def check_backend_device(cfg: DictConfig) -> None:
    """A backend without a CPU backward (flex in torch 2.13) fails before data is prepared."""
    if cfg.get("train", True) and trains_on_cpu(cfg) and not backend_class(cfg.attention.name).supports_cpu_training:
        raise UserError(
            f"attention={cfg.attention.name} cannot train on CPU (no backward pass there); "
            "set attention=block_sparse, or trainer=gpu on a GPU machine"
        )


def check_precision(cfg: DictConfig) -> None:
    """HF block-sparse attention crashes under CPU autocast (scatter dtype mismatch): say so up front."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    if trains_on_cpu(cfg) and "mixed" in precision and cfg.attention.name == "hf_block_sparse":
        raise UserError(
            f"trainer.precision={precision} on CPU crashes HF's block-sparse attention; "
            "set trainer.precision=32-true or attention=hf_full"
        )


def check_problem_type(cfg: DictConfig) -> None:
    """Checked here: raised inside hydra.utils.instantiate it would come wrapped in a traceback."""
    if cfg.model.get("problem_type") is not None:
        task_for(cfg.model.problem_type)


def check_calibrate(cfg: DictConfig) -> None:
    """A calibration that cannot run fails before training, not after it."""
    value = cfg.get("calibrate", False)
    if not isinstance(value, bool):
        raise UserError(f"calibrate={value} is not true or false: fix calibrate")
    if value and cfg.get("train", True) and cfg.trainer.get("limit_val_batches", 1.0) in (0, 0.0):
        raise UserError("calibrate=true fits a temperature on the validation split, which "
                        "trainer.limit_val_batches=0 turns off: set calibrate=false or drop limit_val_batches")


def check_evaluation(cfg: DictConfig) -> None:
    """``train=false`` evaluates one checkpoint: a file or a run dir, not Lightning's last/best."""
    if cfg.get("train", True):
        return
    if not cfg.get("ckpt_path"):
        raise UserError("train=false evaluates a checkpoint; set ckpt_path=<file.ckpt>")
    if cfg.ckpt_path in ("last", "best", "hpc"):
        raise UserError(f"train=false needs a checkpoint file or run dir, not ckpt_path={cfg.ckpt_path}")
