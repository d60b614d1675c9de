"""``predict(cfg)``: checkpoint + input file -> one output row per input row, with label names."""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from .data.collate import BlockPaddingCollator
from .distributed import ddp_job_scope, gather_objects, predict_strategy
from .documents import join_text_columns, row_numbers, unknown_share, warn_unknown_tokens, window_starts
from .errors import UserError
from .evidence import as_column, check_evidence_options, explain, resolve_method, write_html
from .factory import find_checkpoint, load_classifier
from .io_utils import atomic_path
from .module import BigBirdClassifier
from .training import route_lightning_logs_to_hydra

INPUT_READERS = {".csv", ".json", ".jsonl", ".parquet", ".txt"}
OUTPUT_WRITERS = {".csv", ".jsonl"}


def check_writable(output: Path) -> None:
    """Fail before the model runs, not after, when the output cannot be written."""
    import tempfile

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise UserError(f"cannot write to {output.parent} ({err.strerror}); fix output") from None


def read_input(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"input file not found: {path}; fix input")
    suffix = path.suffix.lower()
    if suffix not in INPUT_READERS:
        raise UserError(f"unknown input extension '{suffix}'; use one of {', '.join(sorted(INPUT_READERS))} (input)")
    if path.stat().st_size == 0:
        raise UserError(f"input file is empty: {path}; fix input")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        if suffix == ".parquet":
            return pd.read_parquet(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        return pd.DataFrame({"text": lines})
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 (byte {err.start}); re-encode the input file") from None
    except ValueError as err:
        raise UserError(f"cannot parse {path} ({str(err).splitlines()[0]}); fix input") from None


def encode_documents(
    texts: list[str], module: BigBirdClassifier, max_length: int, long_docs: str, stride: int
) -> list[dict[str, Any]]:
    """One feature per document (truncate) or per overlapping window (chunk); ``row`` = document."""
    tokenizer = module.tokenizer
    if long_docs == "truncate":
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        return [{"input_ids": x, "row": i} for i, x in enumerate(ids)]
    if long_docs != "chunk":
        raise UserError(f"unknown long_docs '{long_docs}'; use truncate or chunk")
    body = max_length - 2
    if not 0 <= stride < body:
        raise UserError(f"chunk_stride={stride} must be in [0, {body}) for max_length={max_length}")
    # BigBird's single-sequence layout: [CLS] tokens [SEP]
    return [{"input_ids": [tokenizer.cls_token_id, *content[start : start + body], tokenizer.sep_token_id], "row": row}
            for row, content in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"])
            for start in window_starts(len(content), body, stride, "chunk")]


def predict(cfg: DictConfig) -> Path:
    route_lightning_logs_to_hydra()
    output, source = Path(cfg.output), Path(cfg.input)  # both mandatory: read before any model is loaded
    if output.suffix.lower() not in OUTPUT_WRITERS:
        raise UserError(f"unknown output extension '{output.suffix}'; use .csv or .jsonl (output)")
    if output.expanduser().resolve() == source.expanduser().resolve():
        raise UserError(f"output={output} is the input file: it would be overwritten; choose another output")
    check_writable(output)
    # every evidence option is checked before the model runs; evidence_html alone means evidence=1
    evidence_k, evidence_html, evidence_window = check_evidence_options(
        1 if cfg.get("evidence") is None else cfg.evidence, cfg.get("evidence_html"),
        cfg.get("evidence_window", 16), cfg.get("evidence_method", "auto"))
    if cfg.get("evidence") is None and evidence_html is None:
        evidence_k = None
    checkpoint = find_checkpoint(cfg.get("run_dir"), cfg.get("ckpt_path"))
    frame = read_input(source)
    # weights_only: a checkpoint may come from anywhere; ours holds only tensors and primitives
    module = load_classifier(checkpoint)
    print(f"Checkpoint: {checkpoint}")
    module.eval()
    data_hp = module.hparams.data or {}
    # windows over long documents share this many tokens: set here or handed on from training
    stride = int(cfg.chunk_stride if cfg.get("chunk_stride") is not None else data_hp.get("chunk_stride", 128))
    if module.task.per_token:
        if evidence_k is not None:
            raise UserError("evidence explains document labels; this model tags words: drop evidence/evidence_html")
        from .tagging import tag_documents

        return tag_documents(cfg, module, frame, output, stride)
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())
    if evidence_k is not None:
        evidence_method = resolve_method(module, cfg.get("evidence_method", "auto"))
    if evidence_k is not None and evidence_method == "gradient" and on_cpu and not module.backend.supports_cpu_training:
        raise UserError(f"evidence needs a backward pass, which attention={module.backend.name} lacks on CPU: "
                        "predict on a GPU (accelerator=gpu) or drop evidence")
    columns = cfg.get("text_column") or data_hp.get("text_column", "text")
    columns = [columns] if isinstance(columns, str) else list(OmegaConf.to_container(columns) if
                                                                  OmegaConf.is_config(columns) else columns)
    if Path(cfg.input).suffix.lower() == ".txt":
        columns = ["text"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"column '{missing[0]}' not in {cfg.input} (columns: {', '.join(map(str, frame.columns))}); "
            "set text_column"
        )
    separator = data_hp.get("text_separator", "\n\n")
    texts = [join_text_columns(rec, columns, separator) for rec in frame[columns].to_dict("records")]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        where = "lines" if Path(cfg.input).suffix.lower() == ".txt" else "rows"
        raise UserError(f"{len(empty)} empty texts in {cfg.input} ({where} {row_numbers(empty)}); "
                        "remove them from input")

    max_length = int(cfg.get("max_length") or data_hp.get("max_length", 4096))
    features = encode_documents(texts, module, max_length, cfg.long_docs, stride)
    shares = [0.0] * len(texts)
    for feature in features:  # over what the model reads: the largest share among a document's windows
        share = unknown_share(feature["input_ids"], module.tokenizer.unk_token_id)
        shares[feature["row"]] = max(shares[feature["row"]], share)
    warn_unknown_tokens(shares, texts, f"documents in {source}")
    # sorted by length so each batch pads little; rows are restored to input order below
    features.sort(key=lambda f: len(f["input_ids"]))
    batch_size = int(cfg.get("batch_size") or data_hp.get("eval_batch_size", 8))
    multiple = int(data_hp.get("pad_to_multiple_of", module.hparams.model["block_size"]))
    loader = DataLoader(features, batch_size=batch_size, collate_fn=BlockPaddingCollator(module.tokenizer, multiple))
    gathered = GatherPredictions(len(features))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=predict_strategy(cfg.get("strategy") or "auto"),
        precision=cfg.precision,
        logger=False,
        callbacks=[RichProgressBar(), gathered],
        enable_checkpointing=False,
    )
    with ddp_job_scope():  # ends the process group in every rank before it exits
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return output
    rows, logits = gathered.rows, gathered.logits
    doc_logits = aggregate(rows, logits, len(texts), cfg.chunk_aggregation)
    evidence = None
    if evidence_k is not None:
        # Lightning hands the model back on the CPU after predict; the backward pass runs where predict ran
        module.to("cpu" if on_cpu else "cuda")
        evidence = explain(module, texts, evidence_k, evidence_window, max_length, cfg.long_docs,
                           stride, cfg.chunk_aggregation, evidence_method)
    write_predictions(frame, doc_logits, module, cfg, output, evidence, evidence_html, texts)
    return output


class GatherPredictions(BasePredictionWriter):
    """Lightning's hook for (DDP) prediction: each rank's outputs with the feature indices it read."""

    def __init__(self, n_features: int) -> None:
        super().__init__(write_interval="epoch")
        self.n_features = n_features
        self.rows: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        # one dataloader: predictions is its list of batches, batch_indices a list per dataloader
        self.rows, self.logits = gather_predictions(predictions, batch_indices[0], self.n_features)


def gather_predictions(
    outputs: list[dict[str, torch.Tensor]], batch_indices: list[list[int]], n_features: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' (row, logits) in feature order, each feature once (on every rank).

    Under DDP every rank predicted its share of the features (Lightning's predict sampler); the
    feature indices Lightning recorded per batch identify them, so any padding repeats are dropped
    and the order is the input's, whatever the sampler did.
    """
    feature = torch.tensor([i for batch in batch_indices for i in batch], dtype=torch.long)
    rows = torch.cat([o["row"] for o in outputs]) if outputs else torch.zeros(0, dtype=torch.long)
    logits = torch.cat([o["logits"] for o in outputs]) if outputs else torch.zeros(0, 0)
    if len(feature) != len(rows):
        raise RuntimeError(f"{len(rows)} predictions but {len(feature)} recorded feature indices")
    parts = gather_objects((feature, rows, logits))
    feature = torch.cat([p[0] for p in parts])
    rows = torch.cat([p[1] for p in parts])
    logits = torch.cat([p[2] for p in parts if p[2].numel()])
    first: dict[int, int] = {}
    for position, index in enumerate(feature.tolist()):
        first.setdefault(index, position)
    if sorted(first) != list(range(n_features)):
        raise RuntimeError(f"predictions cover {len(first)} of {n_features} inputs")
    keep = torch.tensor([first[i] for i in range(n_features)], dtype=torch.long)
    return rows[keep], logits[keep]


def aggregate(rows: torch.Tensor, logits: torch.Tensor, n_docs: int, how: str) -> torch.Tensor:
    out = torch.full((n_docs, logits.shape[1]), float("-inf") if how == "max" else 0.0)
    if how == "max":
        out = out.index_reduce(0, rows, logits, "amax", include_self=True)
    elif how == "mean":
        out = out.index_add(0, rows, logits) / torch.bincount(rows, minlength=n_docs).clamp_min(1).unsqueeze(1)
    else:
        raise UserError(f"unknown chunk_aggregation '{how}'; use mean or max")
    return out


def prediction_frame(ids: list[Any], logits: torch.Tensor, module: BigBirdClassifier) -> pd.DataFrame:
    """The output columns of INTERFACE.md: ``id``, then what the checkpoint's task writes."""
    columns = module.task.prediction_columns(module.outputs(logits), module.id2label, module.threshold)
    return pd.DataFrame({"id": ids, **columns})


def write_predictions(
    frame: pd.DataFrame, logits: torch.Tensor, module: BigBirdClassifier, cfg: DictConfig, output: Path,
    evidence: list[list[dict[str, Any]]] | None = None, evidence_html: Path | None = None,
    texts: list[str] | None = None,
) -> None:
    id_column = cfg.get("id_column") or "id"
    ids = frame[id_column].tolist() if id_column in frame.columns else list(range(len(frame)))
    result = prediction_frame(ids, logits, module)
    if evidence is not None:
        if evidence_html is not None:
            shown = [c for c in result.columns if c != "id" and not c.startswith("prob_")]
            headlines = [", ".join(f"{c} {row[c]:.3f}" if isinstance(row[c], numbers.Real) and not isinstance(row[c], int)
                                   else f"{c} {row[c]}"
                                   for c in shown) for row in result.to_dict("records")]
            write_html(evidence_html, ids, texts or [], headlines, evidence)
            print(f"Wrote the evidence of {len(ids)} documents to {evidence_html}")
        result["evidence"] = as_column(evidence, csv=output.suffix.lower() == ".csv")
    with atomic_path(output) as tmp:
        if output.suffix.lower() == ".csv":
            result.to_csv(tmp, index=False)
        else:
            result.to_json(tmp, orient="records", lines=True, force_ascii=False)
    print(f"Wrote {len(result)} predictions to {output}")
