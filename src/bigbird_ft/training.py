"""``train(cfg)``: what ``python train.py`` does after Hydra composed the config."""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from .attention.registry import backend_class, build_backend
from .data.datamodule import TextClassificationDataModule
from .data.tokenization import resolve_tokenizer
from .distributed import ddp_job_scope, one_process_at_a_time
from .encoder import make_encoder_config
from .errors import UserError
from .export import export_hf_model
from .instantiate import instantiate_callbacks, instantiate_loggers
from .io_utils import write_json_atomic
from .module import PROBLEM_TYPES, REGRESSION, SINGLE_LABEL, BigBirdClassifier


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


def check_lengths(cfg: DictConfig, encoder_config: dict[str, Any], backend_name: str) -> None:
    """Fail in seconds, before the first step, on lengths the model cannot take."""
    block = int(cfg.model.block_size)
    multiple = int(cfg.data.pad_to_multiple_of)
    padded_max = math.ceil(int(cfg.data.max_length) / multiple) * multiple
    positions = int(encoder_config["max_position_embeddings"])
    if padded_max > positions:
        raise UserError(
            f"data.max_length={cfg.data.max_length} (padded to {padded_max}) exceeds the model's "
            f"max_position_embeddings={positions}; lower data.max_length"
        )
    if backend_name != "hf_full" and multiple % block != 0:
        raise UserError(
            f"data.pad_to_multiple_of={multiple} is not a multiple of model.block_size={block}; "
            "set data.pad_to_multiple_of to a multiple of the block size"
        )


def resolve_loss_weights(model_cfg: dict[str, Any], datamodule: TextClassificationDataModule) -> dict[str, Any]:
    """``class_weights=auto`` / ``pos_weight=auto`` -> lists from the training labels (stored in hparams)."""
    model_cfg = dict(model_cfg)
    if model_cfg.get("class_weights") == "auto":
        if datamodule.problem_type != SINGLE_LABEL:
            raise UserError("model.class_weights applies to single_label_classification only; set it to null")
        counts = datamodule.label_counts()
        total = sum(counts)
        # inverse frequency, scaled so a balanced set gets weight 1 everywhere (sklearn's "balanced")
        model_cfg["class_weights"] = [total / (len(counts) * max(c, 1.0)) for c in counts]
        rank_zero_info(f"model.class_weights=auto: {[round(w, 4) for w in model_cfg['class_weights']]}")
    if model_cfg.get("pos_weight") == "auto":
        if datamodule.problem_type != "multi_label_classification":
            raise UserError("model.pos_weight applies to multi_label_classification only; set it to null")
        positives = datamodule.label_counts()
        total = datamodule.num_train_examples()
        model_cfg["pos_weight"] = [(total - p) / max(p, 1.0) for p in positives]
        rank_zero_info(f"model.pos_weight=auto: {[round(w, 4) for w in model_cfg['pos_weight']]}")
    for key in ("class_weights", "pos_weight"):
        if isinstance(model_cfg.get(key), str):
            raise UserError(f"model.{key}={model_cfg[key]} is not understood; use auto, a list of numbers or null")
    return model_cfg


def adapt_monitor_to_problem_type(cfg: DictConfig, problem_type: str) -> None:
    """Regression logs no val/acc: move the default monitor to val/mse (min) instead of failing late."""
    if problem_type != REGRESSION or cfg.get("monitor") != "val/acc":
        return
    with open_dict(cfg):
        cfg.monitor = "val/mse"
        cfg.monitor_mode = "min"
        if cfg.get("optimized_metric") == "val/acc_best":
            cfg.optimized_metric = "val/mse_best"
    rank_zero_info(
        "problem_type=regression: monitor=val/mse monitor_mode=min optimized_metric="
        f"{cfg.get('optimized_metric')} (regression logs no val/acc)"
    )


def check_problem_type(cfg: DictConfig) -> None:
    """Checked here: raised inside hydra.utils.instantiate it would come wrapped in a traceback."""
    problem_type = cfg.model.get("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise UserError(f"unknown model.problem_type '{problem_type}'; use one of {', '.join(PROBLEM_TYPES)} or null")


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
    tokenizer_spec = str(cfg.model.tokenizer)
    tokenizer = resolve_tokenizer(
        tokenizer_spec,
        train_texts=datamodule.train_texts() if tokenizer_spec == "train" else None,
        vocab_size=int(cfg.model.get("tokenizer_vocab_size", 8000)),
        cache_dir=cfg.paths.cache_dir,
        trust_remote_code=bool(cfg.model.get("trust_remote_code", False)),
    )
    datamodule.attach_tokenizer(tokenizer)
    backend = build_backend(
        cfg.attention.name, block_size=int(cfg.model.block_size), num_random_blocks=int(cfg.model.num_random_blocks)
    )
    encoder_config = make_encoder_config(container(cfg.model), tokenizer, backend.hf_attention_type)
    check_lengths(cfg, encoder_config, backend.name)
    # a converted BERT's tokenizer says 512: its limit is now the encoder's (stored in hf_model/ too)
    tokenizer.model_max_length = int(encoder_config["max_position_embeddings"])
    module = BigBirdClassifier(
        model=resolve_loss_weights(container(cfg.model), datamodule),
        attention=container(cfg.attention),
        head=container(cfg.head),
        optim=container(cfg.optim),
        id2label=datamodule.id2label,
        encoder_config=encoder_config,
        problem_type=datamodule.problem_type or SINGLE_LABEL,
        data={
            "max_length": int(cfg.data.max_length),
            "pad_to_multiple_of": int(cfg.data.pad_to_multiple_of),
            "text_column": container(cfg.data).get("text_column", "text"),
            "text_separator": cfg.data.get("text_separator", "\n\n"),
            "eval_batch_size": int(cfg.data.get("eval_batch_size") or cfg.data.batch_size),
        },
        init_weights_from=cfg.model.get("pretrained"),
    )
    module.tokenizer = tokenizer
    return module


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
    route_lightning_logs_to_hydra()
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(int(cfg.seed), workers=True)

    rank_zero_info(f"Loading data <{cfg.data._target_}>")
    check_backend_device(cfg)
    check_precision(cfg)
    check_problem_type(cfg)
    # the datamodule encodes labels by problem type; null = infer from the training labels
    datamodule: TextClassificationDataModule = hydra.utils.instantiate(
        cfg.data, problem_type=cfg.model.get("problem_type")
    )
    eval_only = not cfg.get("train", True)
    if eval_only and not cfg.get("ckpt_path"):
        raise UserError("train=false evaluates a checkpoint; set ckpt_path=<file.ckpt>")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"))
    if eval_only and ckpt_path in ("last", "best", "hpc"):
        raise UserError(f"train=false needs a checkpoint file or run dir, not ckpt_path={ckpt_path}")
    # every DDP rank runs this: the first one generates data, trains the tokenizer and fills the
    # datasets cache, the others wait for the lock and then read the caches
    with one_process_at_a_time(cfg.paths.cache_dir):
        datamodule.prepare_raw()
        adapt_monitor_to_problem_type(cfg, datamodule.problem_type)
        if eval_only:
            module = BigBirdClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
            if module.id2label != datamodule.id2label:
                raise UserError(
                    f"the checkpoint's labels {sorted(module.id2label.values())} differ from the data's "
                    f"{datamodule.label_names}; evaluate on the data it was trained on (data=...)"
                )
            datamodule.attach_tokenizer(module.tokenizer)
        else:
            module = build_module(cfg, datamodule)
        datamodule.setup("fit")
    rank_zero_info(
        f"Model: BigBird {module.encoder.config.hidden_size}d x {module.encoder.config.num_hidden_layers} layers, "
        f"attention={module.backend.name}, head={module.head.name}, problem_type={module.problem_type}, "
        f"labels={datamodule.label_names}"
    )

    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    # the datamodule shards every split per rank itself (LengthBucketBatchSampler cannot be
    # re-created by Lightning's DistributedSampler injection)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, use_distributed_sampler=False
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(container(cfg))

    metrics: dict[str, float] = {}
    if not eval_only:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(scalar_metrics(trainer.callback_metrics))
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
            rank_zero_info(f"Best checkpoint: {best}")
        # val metrics of the weights we export (the best ones), not of the last epoch
        metrics.update(scalar_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0]))
    else:
        metrics.update(scalar_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0]))

    if cfg.get("test", False):
        if datamodule.has_test_split():
            metrics.update(scalar_metrics(trainer.test(module, datamodule=datamodule, verbose=False)[0]))
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


def resolve_ckpt_path(value: str | None) -> str | None:
    """``last``/``best`` go to Lightning as they are; a run dir means its ``checkpoints/last.ckpt``."""
    if not value or value in ("last", "best", "hpc"):
        return value or None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; fix ckpt_path (a .ckpt file, a run dir, or last)")
    return str(path)


@rank_zero_only
def write_outputs(cfg: DictConfig, module: BigBirdClassifier, metrics: dict[str, float], output_dir: Path) -> None:
    # val/test only: throughput and learning-rate values differ run to run even with one seed
    write_json_atomic(
        output_dir / "metrics.json", {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
    )
    rank_zero_info("Metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    if cfg.get("export", True):
        export_hf_model(module, output_dir / "hf_model")
