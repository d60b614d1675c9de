"""``train(cfg)``: what ``python train.py`` does after Hydra composed the config."""

from __future__ import annotations

import functools
import logging
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

from . import calibration
from .attention.registry import backend_class
from .data.datamodule import TextClassificationDataModule
from .data.tokenization import resolve_tokenizer
from .distributed import ddp_job_scope, one_process_at_a_time
from .encoder import make_encoder_config
from .errors import UserError
from .export import export_hf_model
from .factory import build_classifier, find_checkpoint, load_classifier
from .instantiate import instantiate_callbacks, instantiate_loggers
from .io_utils import write_json_atomic
from .module import BigBirdClassifier
from .tasks import Task, task_for


def task_wrapper(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
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


def container(cfg: DictConfig | None) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}


def check_problem_type(cfg: DictConfig) -> None:
    """Checked here: raised inside hydra.utils.instantiate it would come wrapped in a traceback."""
    if cfg.model.get("problem_type") is not None:
        task_for(cfg.model.problem_type)


def adapt_monitor_to_task(cfg: DictConfig, task: Task) -> None:
    """A task without val/acc (regression) moves the default monitor to its own instead of failing late."""
    metric, mode = task.monitor
    if cfg.get("monitor") != "val/acc" or metric == "val/acc":
        return
    with open_dict(cfg):
        cfg.monitor, cfg.monitor_mode = metric, mode
        if cfg.get("optimized_metric") == "val/acc_best":
            cfg.optimized_metric = f"{metric}_best"
    rank_zero_info(
        f"problem_type={task.name}: monitor={metric} monitor_mode={mode} optimized_metric="
        f"{cfg.get('optimized_metric')} ({task.name} logs no val/acc)"
    )


def trains_on_cpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def check_backend_device(cfg: DictConfig) -> None:
    """A backend without a CPU backward (flex in torch 2.13) must fail before data is prepared."""
    if cfg.get("train", True) and trains_on_cpu(cfg) and not backend_class(cfg.attention.name).supports_cpu_training:
        raise UserError(
            f"attention={cfg.attention.name} cannot train on CPU (no backward pass there); "
            "set attention=block_sparse, or trainer=gpu on a GPU machine"
        )


def check_trainer(cfg: DictConfig) -> None:
    """Settings that would train nothing, or need hardware that is not there, fail before data is read."""
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


def check_precision(cfg: DictConfig) -> None:
    """HF block-sparse attention crashes under CPU autocast (scatter dtype mismatch): say so up front."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    on_cpu = trains_on_cpu(cfg)
    if on_cpu and "mixed" in precision and cfg.attention.name == "hf_block_sparse":
        raise UserError(
            f"trainer.precision={precision} on CPU crashes HF's block-sparse attention; "
            "set trainer.precision=32-true or attention=hf_full"
        )


def build_module(cfg: DictConfig, datamodule: TextClassificationDataModule) -> BigBirdClassifier:
    """Tokenizer -> DataModule, model config -> classifier, the model's lengths -> DataModule."""
    tokenizer_spec = str(cfg.model.tokenizer)
    tokenizer = resolve_tokenizer(
        tokenizer_spec,
        train_texts=datamodule.train_texts() if tokenizer_spec == "train" else None,
        vocab_size=int(cfg.model.get("tokenizer_vocab_size", 8000)),
        cache_dir=cfg.paths.cache_dir,
        trust_remote_code=bool(cfg.model.get("trust_remote_code", False)),
    )
    datamodule.attach_tokenizer(tokenizer)
    model_cfg = datamodule.task.resolve_weights(container(cfg.model), datamodule.train_labels, datamodule.label2id)
    encoder_config = make_encoder_config(model_cfg, tokenizer, backend_class(cfg.attention.name).hf_attention_type)
    connect(datamodule, encoder_config, cfg.attention.name)
    return build_classifier(
        model=model_cfg,
        attention=container(cfg.attention),
        head=container(cfg.head),
        id2label=datamodule.id2label,
        tokenizer=tokenizer,
        encoder_config=encoder_config,
        problem_type=datamodule.problem_type,
        optim=container(cfg.optim),
        # what predict needs to read documents the way training did
        data={
            "max_length": datamodule.max_length,
            "pad_to_multiple_of": datamodule.pad_to_multiple_of,
            "text_column": container(cfg.data).get("text_column", "text"),
            "text_separator": datamodule.text_separator,
            "eval_batch_size": datamodule.eval_batch_size,
            "tokens_column": datamodule.tokens_column,
            "tags_column": datamodule.tags_column,
            "chunk_stride": datamodule.chunk_stride,
        },
    )


def connect(datamodule: TextClassificationDataModule, encoder_config: dict[str, Any], attention: str) -> None:
    datamodule.connect(
        block_size=int(encoder_config["block_size"]),
        max_positions=int(encoder_config["max_position_embeddings"]),
        block_aligned=backend_class(attention).sparse,
    )


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value)
        elif isinstance(value, int | float):
            out[key] = float(value)
    return out


def route_lightning_logs_to_hydra() -> None:
    """Lightning adds its own console handler; under Hydra every line would print twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@task_wrapper
def train(cfg: DictConfig) -> float | None:
    started = time.perf_counter()
    route_lightning_logs_to_hydra()
    if cfg.get("task") is not None:  # task=mlm: continued pretraining instead of fine-tuning
        from .mlm import pretrain

        return pretrain(cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(int(cfg.seed), workers=True)

    rank_zero_info(f"Loading data <{cfg.data._target_}>")
    check_trainer(cfg)
    check_run_dir(cfg)
    check_backend_device(cfg)
    check_precision(cfg)
    check_problem_type(cfg)
    calibration.check_calibrate(cfg)
    # the datamodule encodes labels by problem type; null = infer from the training labels
    datamodule: TextClassificationDataModule = hydra.utils.instantiate(
        cfg.data, problem_type=cfg.model.get("problem_type")
    )
    eval_only = not cfg.get("train", True)
    if eval_only and not cfg.get("ckpt_path"):
        raise UserError("train=false evaluates a checkpoint; set ckpt_path=<file.ckpt>")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), resume=not eval_only)
    if eval_only and ckpt_path in ("last", "best", "hpc"):
        raise UserError(f"train=false needs a checkpoint file or run dir, not ckpt_path={ckpt_path}")
    # every DDP rank runs this: the first one generates data, trains the tokenizer and fills the
    # datasets cache, the others wait for the lock and then read the caches
    with one_process_at_a_time(cfg.paths.cache_dir):
        datamodule.prepare_raw()
        adapt_monitor_to_task(cfg, datamodule.task)
        if eval_only:
            module = load_classifier(ckpt_path)
            if module.id2label != datamodule.id2label:
                raise UserError(
                    f"the checkpoint's labels {sorted(module.id2label.values())} differ from the data's "
                    f"{datamodule.label_names}; evaluate on the data it was trained on (data=...)"
                )
            datamodule.attach_tokenizer(module.tokenizer)
            connect(datamodule, module.hparams.encoder_config, module.backend.name)
        else:
            module = build_module(cfg, datamodule)
        datamodule.setup("fit")
    rank_zero_info(
        f"Model: BigBird {module.encoder.config.hidden_size}d x {module.encoder.config.num_hidden_layers} layers, "
        f"attention={module.backend.name}, head={module.head.name}, problem_type={module.problem_type}, "
        f"labels={datamodule.label_names}"
    )

    if cfg.get("estimate"):
        from .estimate import estimate_run

        estimate_run(cfg, module, datamodule, output_dir, time.perf_counter() - started)
        return None

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    # the datamodule shards every split per rank itself (LengthBucketBatchSampler cannot be
    # re-created by Lightning's DistributedSampler injection)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, use_distributed_sampler=False
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(container(cfg))

    metrics: dict[str, Any] = {}
    if not eval_only:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    best = None if eval_only or not trainer.checkpoint_callback else trainer.checkpoint_callback.best_model_path
    if best:
        rank_zero_info(f"Best checkpoint: {best}")
    # the validation and test logits, for the temperature and the calibration metrics
    logits = calibration.CollectLogits() if module.task.calibrated else None
    if logits is not None:
        trainer.callbacks.append(logits)
    elif cfg.get("calibrate"):
        rank_zero_info(f"calibrate: {module.problem_type} keeps its raw outputs (temperature scaling is single-label)")
    # val metrics of the weights we test and export (the best ones, loaded into module), not the last epoch's
    metrics.update(scalar_metrics(trainer.validate(
        module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False, weights_only=True)[0]))
    if logits is not None:
        fit = bool(cfg.get("calibrate")) and not eval_only
        # T goes into the checkpoint holding the module's weights: the best one, else (no monitored
        # checkpoint, e.g. debug=fdr) last.ckpt, which predict then reads
        last = output_dir / "checkpoints" / "last.ckpt"
        holder = best or (str(last) if not eval_only and last.is_file() else None)
        metrics.update(calibration.report("val", logits, module, output_dir, fit=fit, checkpoint=holder))

    if cfg.get("test", False):
        if datamodule.has_test_split():
            metrics.update(scalar_metrics(trainer.test(module, datamodule=datamodule, verbose=False)[0]))
            if logits is not None:
                metrics.update(calibration.report("test", logits, module, output_dir))
        else:
            rank_zero_info("No test split: skipping test (set data.test_file or test=false)")

    write_outputs(cfg, module, metrics, output_dir)
    optimized = cfg.get("optimized_metric")
    if optimized:
        if optimized not in metrics:
            raise UserError(
                f"optimized_metric '{optimized}' was not logged (available: {', '.join(sorted(metrics))}); "
                "set optimized_metric"
            )
        return metrics[optimized]
    return None


def resolve_ckpt_path(value: str | None, resume: bool) -> str | None:
    """``last``/``best``/``hpc`` go to Lightning as they are; a file or run dir through ``find_checkpoint``."""
    if not value or value in ("last", "best", "hpc"):
        return value or None
    return str(find_checkpoint(ckpt_path=value, resume=resume))


@rank_zero_only
def write_outputs(cfg: DictConfig, module: BigBirdClassifier, metrics: dict[str, Any], output_dir: Path) -> None:
    # val/test only: throughput and learning-rate values differ run to run even with one seed
    write_json_atomic(
        output_dir / "metrics.json", {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    )
    rank_zero_info("Metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in sorted(metrics.items())))
    if cfg.get("export", True):
        export_hf_model(module, output_dir / "hf_model")
