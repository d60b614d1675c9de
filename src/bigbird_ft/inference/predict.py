"""``predict(cfg)``: checkpoint + input file -> one output row per input row, whatever the task.

One loop for every problem type: the task reads the documents from the table and turns them into
model inputs with the checkpoint's ``InputSpec``; one Trainer predicts them (on one device or under
DDP, each input gathered once); the task turns the per-input outputs into its columns (label names
and probabilities, values, or tags and entities).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..cli import route_lightning_logs_to_hydra
from ..distributed import ddp_job_scope, gather_objects, predict_strategy
from ..errors import UserError
from ..inputs.documents import unknown_share, warn_unknown_tokens
from ..inputs.spec import InputSpec
from ..io_utils import atomic_path
from ..models.checkpoints import find_checkpoint
from ..models.classifier import BigBirdClassifier
from ..models.factory import load_classifier
from ..tasks.base import Documents
from .evidence import check_evidence_options, explain, resolve_method, write_html

INPUT_READERS = {".csv", ".json", ".jsonl", ".parquet", ".txt"}
OUTPUT_WRITERS = {".csv", ".jsonl"}


@dataclass
class Request:
    """What ``predict.py`` was asked, checked before any model is loaded."""

    source: Path
    output: Path
    evidence: int | None = None
    evidence_html: Path | None = None
    evidence_window: int = 16
    evidence_method: str = "auto"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Request:
        output, source = Path(cfg.output), Path(cfg.input)  # both mandatory: read first
        if output.suffix.lower() not in OUTPUT_WRITERS:
            raise UserError(f"unknown output extension '{output.suffix}'; use .csv or .jsonl (output)")
        if output.expanduser().resolve() == source.expanduser().resolve():
            raise UserError(f"output={output} is the input file: it would be overwritten; choose another output")
        check_writable(output)
        # evidence_html alone means evidence=1
        k, html_path, window = check_evidence_options(
            1 if cfg.get("evidence") is None else cfg.evidence, cfg.get("evidence_html"),
            cfg.get("evidence_window", 16), cfg.get("evidence_method", "auto"))
        wanted = cfg.get("evidence") is not None or html_path is not None
        return cls(source, output, k if wanted else None, html_path, window, cfg.get("evidence_method", "auto"))


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


class Predictor:
    """A trained model and how it reads documents: a table in, the task's columns out.

    ``inputs``: the checkpoint's ``InputSpec`` with predict's own settings applied (length, stride,
    text columns, batch size). The one place a prediction Trainer is made.
    """

    def __init__(self, module: BigBirdClassifier, inputs: InputSpec, long_docs: str = "truncate",
                 aggregation: str = "mean", trainer: dict[str, Any] | None = None, in_process: bool = False,
                 top_k: int = 1) -> None:
        self.module, self.inputs, self.long_docs, self.aggregation = module.eval(), inputs, long_docs, aggregation
        if int(top_k) < 1:
            raise UserError(f"top_k={top_k} must be at least 1; fix top_k")
        self.top_k = int(top_k)
        # in_process: batches run through predict_step here, on the module's device (the server, which
        # predicts a few documents per call: a Trainer per call would cost more than the batch)
        self.in_process = in_process
        self.trainer_options = {"accelerator": "auto", "devices": 1, "strategy": "auto", "precision": "32-true",
                                **(trainer or {})}
        inputs.window_starts(0, long_docs)  # an unknown long_docs fails before any work
        if long_docs == "chunk" and inputs.reads_whole_document():
            raise UserError(f"long_docs=chunk cuts documents for the readers of one input; this model's "
                            f"reader={inputs.reader.name} reads them itself: drop long_docs")
        if long_docs == "chunk":
            inputs.check(windows=True)
        trained = module.inputs
        if inputs.reader.name == "hierarchical" and inputs.max_segments > trained.max_segments:
            raise UserError(f"max_length={inputs.max_length} gives {inputs.max_segments} segments; this "
                            f"reader=hierarchical model has positions for {trained.max_segments} "
                            f"(max_length={trained.max_length}): lower max_length")

    @classmethod
    def from_config(cls, module: BigBirdClassifier, cfg: DictConfig) -> Predictor:
        columns = cfg.get("text_column")
        if Path(str(cfg.input)).suffix.lower() == ".txt":
            columns = "text"  # one document per line
        elif OmegaConf.is_config(columns):
            columns = OmegaConf.to_container(columns)
        inputs = module.inputs.replace(max_length=cfg.get("max_length"), stride=cfg.get("chunk_stride"),
                                       text_columns=columns, eval_batch_size=cfg.get("batch_size"),
                                       question_column=cfg.get("question_column"),
                                       context_column=cfg.get("context_column"),
                                       max_answer_length=cfg.get("max_answer_length"))
        trainer = {"accelerator": cfg.accelerator, "devices": cfg.devices,
                   "strategy": predict_strategy(cfg.get("strategy") or "auto"), "precision": cfg.precision}
        return cls(module, inputs, cfg.long_docs, cfg.chunk_aggregation, trainer, top_k=cfg.get("top_k", 1))

    def predict(self, frame: pd.DataFrame, source: str) -> tuple[Documents, dict[str, Any]] | None:
        """The table's documents and their columns; None on DDP ranks other than 0."""
        task, module = self.module.task, self.module
        documents = task.read_documents(frame, self.inputs, source, module.id2label)
        features = task.predict_features(documents, module.tokenizer, self.inputs, self.long_docs)
        shares = [0.0] * len(documents.texts)
        for feature in features:  # over what the model reads: the largest share among a document's windows
            row, ids = feature["row"], feature["input_ids"]
            windows = ids if ids and not isinstance(ids[0], int) else [ids]
            for window in windows:
                shares[row] = max(shares[row], unknown_share(window, module.tokenizer.unk_token_id))
        warn_unknown_tokens(shares, documents.texts, f"documents in {source}")
        outputs = self.run(features)
        if outputs is None:
            return None
        return documents, task.document_predictions(outputs, documents, self.aggregation, module.id2label,
                                                    module.threshold, inputs=self.inputs, top_k=self.top_k)

    def run(self, features: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]] | None:
        """Each feature's outputs (``Task.predict_outputs``), in feature order; None on ranks > 0."""
        # sorted by length so each batch pads little; GatherOutputs restores the order
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        loader = DataLoader([features[i] for i in order], batch_size=self.inputs.eval_batch_size,
                            collate_fn=self.inputs.collator(self.module.tokenizer))
        in_order = self.run_here(loader) if self.in_process else self.run_trainer(loader, len(features))
        if in_order is None:
            return None
        restored: list[dict[str, torch.Tensor]] = [{}] * len(features)
        for position, outputs in enumerate(in_order):
            restored[order[position]] = outputs
        return restored

    def run_trainer(self, loader: DataLoader, n_features: int) -> list[dict[str, torch.Tensor]] | None:
        gathered = GatherOutputs(n_features)
        trainer = L.Trainer(**self.trainer_options, logger=False, callbacks=[RichProgressBar(), gathered],
                            enable_checkpointing=False)
        with ddp_job_scope():  # ends the process group in every rank before it exits
            trainer.predict(self.module, dataloaders=loader, return_predictions=False)
        return gathered.features if trainer.is_global_zero else None

    @torch.inference_mode()
    def run_here(self, loader: DataLoader) -> list[dict[str, torch.Tensor]]:
        """The loader's batches through ``predict_step`` as Lightning's predict loop runs them, without a Trainer."""
        device = next(self.module.parameters()).device
        outputs: list[dict[str, torch.Tensor]] = []
        for index, batch in enumerate(loader):
            batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
            result = self.module.predict_step(batch, index)
            size = len(next(iter(result.values())))
            outputs.extend({key: value[offset].cpu() for key, value in result.items()} for offset in range(size))
        return outputs


class GatherOutputs(BasePredictionWriter):
    """Lightning's hook for (DDP) prediction: every input's outputs, each once, in loader order."""

    def __init__(self, n_features: int) -> None:
        super().__init__(write_interval="epoch")
        self.n_features = n_features
        self.features: list[dict[str, torch.Tensor]] = []

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        # one dataloader: predictions is its list of batches, batch_indices a list per dataloader
        self.features = gather_features(predictions, batch_indices[0], self.n_features)


def gather_features(outputs: list[dict[str, torch.Tensor]], batch_indices: list[list[int]],
                    n_features: int) -> list[dict[str, torch.Tensor]]:
    """All ranks' per-input outputs in loader order, each input once (on every rank).

    Under DDP every rank predicted its share (Lightning's predict sampler, which may repeat inputs to
    even the shares); the input indices Lightning recorded per batch identify them, so the repeats
    are dropped and the order is the loader's, whatever the sampler did.
    """
    mine = []
    for batch, indices in zip(outputs, batch_indices, strict=True):
        for offset, index in enumerate(indices):
            mine.append((index, {key: value[offset].cpu() for key, value in batch.items()}))
    found: dict[int, dict[str, torch.Tensor]] = {}
    for rank in gather_objects(mine):
        for index, values in rank:
            found.setdefault(index, values)
    if sorted(found) != list(range(n_features)):
        raise RuntimeError(f"predictions cover {len(found)} of {n_features} inputs")
    return [found[i] for i in range(n_features)]


def predict(cfg: DictConfig) -> Path:
    route_lightning_logs_to_hydra()
    request = Request.from_config(cfg)
    checkpoint = find_checkpoint(cfg.get("run_dir"), cfg.get("ckpt_path"))
    frame = read_input(request.source)
    # weights_only: a checkpoint may come from anywhere; ours holds only tensors and primitives
    module = load_classifier(checkpoint)
    print(f"Checkpoint: {checkpoint}")
    predictor = Predictor.from_config(module, cfg)
    evidence_method = check_evidence(module, request, predictor)
    result = predictor.predict(frame, str(request.source))
    if result is None:
        return request.output
    documents, columns = result
    evidence = None
    if request.evidence is not None:
        # Lightning hands the model back on the CPU after predict; the backward pass runs where predict ran
        module.to("cuda" if predictor.trainer_options["accelerator"] != "cpu" and torch.cuda.is_available() else "cpu")
        evidence = explain(module, documents.texts, request.evidence, request.evidence_window, predictor.inputs,
                           predictor.long_docs, predictor.aggregation, evidence_method)
    write_predictions(frame, columns, cfg.get("id_column") or "id", request, evidence, documents.texts)
    return request.output


def check_evidence(module: BigBirdClassifier, request: Request, predictor: Predictor) -> str | None:
    """The evidence method, or a one-line refusal before the model runs."""
    if request.evidence is None:
        return None
    if module.task.per_token:
        what = "answers questions" if module.task.pair_input else "tags words"
        raise UserError(f"evidence explains document labels; this model {what}: drop evidence/evidence_html")
    method = resolve_method(module, request.evidence_method)
    accelerator = str(predictor.trainer_options["accelerator"])
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if method == "gradient" and on_cpu and not module.backend.supports_cpu_training:
        raise UserError(f"evidence needs a backward pass, which attention={module.backend.name} lacks on CPU: "
                        "predict on a GPU (accelerator=gpu) or drop evidence")
    return method


def prediction_frame(ids: list[Any], columns: dict[str, Any]) -> pd.DataFrame:
    """The output columns (the public contract): ``id``, then what the checkpoint's task writes."""
    return pd.DataFrame({"id": ids, **columns})


def document_records(columns: dict[str, Any]) -> list[dict[str, Any]]:
    """Per document, the values of its predict.py row (after ``id``) as JSON values, the
    ``prob_<label>`` columns grouped into ``probs`` {label: p}: what the server answers."""
    lists = {name: value.tolist() if hasattr(value, "tolist") else list(value) for name, value in columns.items()}
    n_docs = len(next(iter(lists.values()))) if lists else 0
    records: list[dict[str, Any]] = []
    for row in range(n_docs):
        record: dict[str, Any] = {}
        for name, values in lists.items():
            if name.startswith("prob_"):
                record.setdefault("probs", {})[name.removeprefix("prob_")] = values[row]
            else:
                record[name] = values[row]
        records.append(record)
    return records


def write_predictions(frame: pd.DataFrame, columns: dict[str, Any], id_column: str, request: Request,
                      evidence: list[list[dict[str, Any]]] | None = None, texts: list[str] | None = None) -> None:
    """One row per input row, written atomically; a csv cell holds a list (tags, entities, evidence)
    as a JSON string, jsonl keeps it."""
    ids = frame[id_column].tolist() if id_column in frame.columns else list(range(len(frame)))
    result = prediction_frame(ids, columns)
    if evidence is not None:
        if request.evidence_html is not None:
            shown = [c for c in result.columns if c != "id" and not c.startswith("prob_")]
            headlines = [", ".join(f"{c} {row[c]:.3f}" if isinstance(row[c], numbers.Real) and not isinstance(row[c], int)
                                   else f"{c} {row[c]}" for c in shown) for row in result.to_dict("records")]
            write_html(request.evidence_html, ids, texts or [], headlines, evidence)
            print(f"Wrote the evidence of {len(ids)} documents to {request.evidence_html}")
        result["evidence"] = evidence
    csv = request.output.suffix.lower() == ".csv"
    if csv:
        for name in result.columns:
            if any(isinstance(value, list | dict) for value in result[name]):
                result[name] = [json.dumps(value, ensure_ascii=False) for value in result[name]]
    with atomic_path(request.output) as tmp:
        if csv:
            result.to_csv(tmp, index=False)
        else:
            result.to_json(tmp, orient="records", lines=True, force_ascii=False)
    print(f"Wrote {len(result)} predictions to {request.output}")
