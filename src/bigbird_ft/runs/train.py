"""``train(cfg)``: what ``python train.py`` does after Hydra composed the config.

It reads as its steps: check the config, instantiate the data and the model, fit, validate and
test the best checkpoint, write the metrics and ``hf_model/``.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ..cli import route_lightning_logs_to_hydra
from ..config import instantiate_all
from ..data.datamodule import DocumentDataModule
from ..distributed import ddp_job_scope, one_process_at_a_time
from ..errors import UserError
from ..inference.export import export_hf_model
from ..io_utils import write_json_atomic
from ..models.checkpoints import find_checkpoint
from ..models.classifier import BigBirdClassifier
from ..models.factory import checkpoint_for_data, classifier_for_data
from ..tasks import Task
from ..training.calibration import TemperatureScaling
from ..training.checks import check_config


def run_wrapper(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Always close W&B (a multirun otherwise records one run only) and say where outputs went.

    ``ddp_job_scope`` ends the job's DDP process group, so the next job of a sweep starts its own.
    """

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            with ddp_job_scope():
                return fn(cfg)
        finally:
            if "wandb" in sys.modules:
                import wandb

                if wandb.run is not None:
                    wandb.finish()
            rank_zero_info(f"Output dir: {cfg.paths.output_dir}")

    return wrapped


@run_wrapper
def train(cfg: DictConfig) -> float | None:
    started = time.perf_counter()
    route_lightning_logs_to_hydra()
    L.seed_everything(int(cfg.seed), workers=True)
    check_config(cfg)
    datamodule, module = instantiate_run(cfg)
    if cfg.get("estimate"):
        from ..training.estimate import estimate_run

        estimate_run(cfg, module, datamodule, Path(cfg.paths.output_dir), time.perf_counter() - started)
        return None
    metrics = fit_and_test(cfg, datamodule, module)
    write_outputs(cfg, module, metrics)
    return optimized_metric(cfg, metrics)


# ------------------------------------------------------------------ instantiate
def instantiate_run(cfg: DictConfig) -> tuple[DocumentDataModule, BigBirdClassifier]:
    """The DataModule and the classifier, connected: a new one (fit) or the checkpoint (``train=false``).

    Every DDP rank runs this: the first one generates data, trains the tokenizer and fills the
    datasets cache, the others wait for the lock and then read the caches.
    """
    rank_zero_info(f"Loading data <{cfg.data._target_}>")
    # the datamodule encodes labels by problem type; null = infer from the training labels
    datamodule: DocumentDataModule = hydra.utils.instantiate(
        cfg.data, problem_type=cfg.model.get("problem_type"))
    with one_process_at_a_time(cfg.paths.cache_dir):
        datamodule.prepare_raw()
        adapt_monitor_to_task(cfg, datamodule.task)
        if cfg.get("train", True):
            module = classifier_for_data(container(cfg.model), container(cfg.attention), container(cfg.head),
                                         container(cfg.optim), datamodule, cfg.paths.cache_dir,
                                         reader=container(cfg.get("reader")))
        else:  # train=false: evaluate a checkpoint
            module = checkpoint_for_data(find_checkpoint(ckpt_path=cfg.ckpt_path), datamodule)
        datamodule.setup("fit")
    rank_zero_info(
        f"Model: BigBird {module.encoder.config.hidden_size}d x {module.encoder.config.num_hidden_layers} layers, "
        f"attention={module.backend.name}, head={module.head.name}, reader={module.inputs.reader.name}, "
        f"problem_type={module.problem_type}, "
        f"labels={datamodule.label_names}")
    return datamodule, module


def adapt_monitor_to_task(cfg: DictConfig, task: Task) -> None:
    """A task without val/acc (regression) moves the default monitor to its own instead of failing late."""
    metric, mode = task.monitor
    if cfg.get("monitor") != "val/acc" or metric == "val/acc":
        return
    with open_dict(cfg):
        cfg.monitor, cfg.monitor_mode = metric, mode
        if cfg.get("optimized_metric") == "val/acc_best":
            cfg.optimized_metric = f"{metric}_best"
    rank_zero_info(f"problem_type={task.name}: monitor={metric} monitor_mode={mode} optimized_metric="
                   f"{cfg.get('optimized_metric')} ({task.name} logs no val/acc)")


# ------------------------------------------------------------------------- fit
def fit_and_test(cfg: DictConfig, datamodule: DocumentDataModule,
                 module: BigBirdClassifier) -> dict[str, Any]:
    """Fit (unless ``train=false``), then validate and test the best weights; the metrics of both."""
    fitting = bool(cfg.get("train", True))
    ckpt_path = cfg.get("ckpt_path") if fitting else None  # resume from: a file, a run dir or last/best/hpc
    if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
        ckpt_path = str(find_checkpoint(ckpt_path=ckpt_path, resume=True))
    calibration = TemperatureScaling(fit=fitting and bool(cfg.get("calibrate")), run_dir=cfg.paths.output_dir) \
        if module.task.calibrated else None
    if calibration is None and cfg.get("calibrate"):
        rank_zero_info(f"calibrate: {module.problem_type} keeps its raw outputs (temperature scaling is single-label)")
    # the datamodule shards every split per rank itself (LengthBucketBatchSampler cannot be
    # re-created by Lightning's DistributedSampler injection)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[*instantiate_all(cfg.get("callbacks")), *([calibration] if calibration else [])],
        logger=instantiate_all(cfg.get("logger")) or False, use_distributed_sampler=False)
    for logger in trainer.loggers:
        logger.log_hyperparams(container(cfg))
    metrics: dict[str, Any] = {}
    if fitting:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    best = trainer.checkpoint_callback.best_model_path if fitting and trainer.checkpoint_callback else None
    if best:
        rank_zero_info(f"Best checkpoint: {best}")
    # val metrics of the weights we test and export (the best ones, loaded into module), not the last epoch's
    metrics.update(scalar_metrics(trainer.validate(
        module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False, weights_only=True)[0]))
    if cfg.get("test", False):
        if datamodule.has_test_split():
            metrics.update(scalar_metrics(trainer.test(module, datamodule=datamodule, verbose=False)[0]))
        else:
            rank_zero_info("No test split: skipping test (set data.test_file or test=false)")
    return {**metrics, **(calibration.report if calibration else {})}


# ----------------------------------------------------------------------- write
@rank_zero_only
def write_outputs(cfg: DictConfig, module: BigBirdClassifier, metrics: dict[str, Any]) -> None:
    """``metrics.json`` (val/test only: throughput and learning-rate values differ run to run even
    with one seed) and, with ``export``, ``hf_model/``."""
    output_dir = Path(cfg.paths.output_dir)
    write_json_atomic(output_dir / "metrics.json", {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))})
    rank_zero_info("Metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in sorted(metrics.items())))
    if cfg.get("export", True):
        export_hf_model(module, output_dir / "hf_model")


def optimized_metric(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """What a sweep optimizes (``optimized_metric``), or None."""
    optimized = cfg.get("optimized_metric")
    if not optimized:
        return None
    if optimized not in metrics:
        raise UserError(f"optimized_metric '{optimized}' was not logged (available: {', '.join(sorted(metrics))}); "
                        "set optimized_metric")
    return metrics[optimized]


def container(cfg: DictConfig | None) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out
