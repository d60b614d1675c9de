"""A problem type as one object: everything that differs between single-label, multi-label and regression.

Nothing outside ``tasks/`` branches on the problem type: the DataModule asks its task how to read
and encode labels, the LightningModule asks for the loss, outputs and metrics, predict asks for the
output columns. Adding a problem type = one module here + ``register_task`` + its test.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torchmetrics import Metric, MetricCollection

from ..errors import UserError

log = logging.getLogger(__name__)

#: per-label loss weights under ``model.``; each belongs to the one task whose ``weight_key`` it is
WEIGHT_KEYS = ("class_weights", "pos_weight")
#: weight key -> the names of the tasks it belongs to (filled by ``register_task``)
WEIGHT_KEY_OWNERS: dict[str, list[str]] = {}


def metric_key(label: str) -> str:
    """A label name usable inside a logged metric name (no '/' nesting, no spaces)."""
    return re.sub(r"[/\s]+", "_", label)


class Task:
    """Stateless: the label names, weights and threshold it needs are handed in by the caller."""

    name: ClassVar[str]
    #: ``model.<key>`` holding per-label loss weights (``auto`` = from the training labels), or None
    weight_key: ClassVar[str | None] = None
    #: the default ``monitor`` / ``monitor_mode`` of a run of this type
    monitor: ClassVar[tuple[str, str]] = ("val/acc", "max")
    #: metric names also logged under a second name, so ``val/acc``/``val/f1`` exist for every type
    metric_aliases: ClassVar[Mapping[str, str]] = {}
    #: metrics where lower is better (best-so-far uses MinMetric)
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    #: shown in the progress bar
    headline: ClassVar[tuple[str, ...]] = ("acc", "f1")
    #: a validation split of train may keep the class proportions
    stratified_split: ClassVar[bool] = False
    #: fewer distinct training labels than this is an error (multi-label: one label can be learned)
    min_train_labels: ClassVar[int] = 2
    #: calibrate=true fits a softmax temperature after training (calibration.py)
    calibrated: ClassVar[bool] = False
    #: one output per token (a per-token head) instead of one per document
    per_token: ClassVar[bool] = False
    #: the input is a (question, context) pair, read by a pair head (head=span)
    pair_input: ClassVar[bool] = False

    def hf_problem_type(self) -> str | None:
        """``config.problem_type`` of an exported model (transformers knows the document tasks only)."""
        return self.name

    # -------------------------------------------------------------- raw rows
    def input_columns(self, datamodule: Any) -> list[tuple[str, str]]:
        """(column, the data key that names it) that every split must have."""
        return document_columns(datamodule)

    def check_rows(self, ds: Any, split: str, source: str, datamodule: Any) -> Any:
        """Missing labels and empty texts end the run with their row numbers (data/documents.py)."""
        from ..inputs.documents import check_rows

        return check_rows(ds, split, source, datamodule.text_columns, datamodule.label_column,
                          datamodule.drop_empty, blank_is_label=datamodule.label_separator is not None)

    def row_normaliser(self, datamodule: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A raw row -> ``text`` (the text columns joined) and the normalised ``label``."""
        from ..inputs.documents import join_text_columns

        to_label = self.normaliser(datamodule.describe_source(), datamodule.label_separator)
        columns, separator, label = datamodule.text_columns, datamodule.text_separator, datamodule.label_column

        def normalise(example: dict[str, Any]) -> dict[str, Any]:
            return {"text": join_text_columns(example, columns, separator), "label": to_label(example[label])}

        return normalise

    def row_features(self) -> dict[str, Any]:
        """The ``datasets`` features of what ``row_normaliser`` writes (explicit, so an empty list keeps its type)."""
        import datasets

        return {"text": datasets.Value("string"), "label": self.label_feature()}

    def batch_encoder(self, tokenizer: Any, inputs: Any, label2id: Mapping[str, int], train: bool = False
                      ) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
        """A batched ``datasets.map`` function: normalised rows -> model features, read as ``inputs``
        (the run's ``InputSpec``) says: one per document, or (``reader=chunks``, ``train``) one per window,
        each with its document's label."""
        from ..inputs.documents import unknown_share

        encode_label = self.label_encoder(label2id)

        def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            read = inputs.read(tokenizer, batch["text"], train=train)
            out: dict[str, list] = {"input_ids": [], "labels": [], "row": [], "length": [], "input_length": [],
                                    "n_inputs": [], "cut": [], "unknown_share": []}
            for row, ids, n_tokens in read:
                windows = ids if ids and not isinstance(ids[0], int) else [ids]
                out["input_ids"].append(ids)
                out["labels"].append(encode_label(batch["label"][row]))
                out["row"].append(indices[row])
                out["length"].append(sum(len(w) for w in windows))  # the tokens the model reads
                out["input_length"].append(max(len(w) for w in windows))
                out["n_inputs"].append(len(windows))
                # what the reader reads of the whole document (a chunks training window is one of several)
                read_tokens = min(n_tokens, inputs.max_length - 2) if inputs.reader.segmented \
                    else sum(len(w) - 2 for w in windows)
                out["cut"].append(n_tokens > read_tokens)
                out["unknown_share"].append(unknown_share([t for w in windows for t in w], tokenizer.unk_token_id))
            return out

        return encode

    def stack_labels(self, labels: Sequence[Any], length: int) -> torch.Tensor:
        """A batch's targets; ``length`` is the padded sequence length (per-token targets pad to it)."""
        from ..inputs.documents import stack_labels

        return stack_labels(labels)

    def check_reader(self, reader: Any) -> None:
        """Every reader reads a document for a document task (token classification refuses all but one)."""

    def check_head(self, head: Any) -> None:
        """A document head for a document task, a per-token head for a per-token one."""
        if bool(getattr(head, "pair_input", False)) != self.pair_input:
            raise UserError(f"head={head.name} reads a question and a context, not model.problem_type={self.name}: "
                            "set head=")
        if bool(getattr(head, "per_token", False)) != self.per_token:
            wanted = "a per-token head (head=token)" if self.per_token else "a head that pools the document"
            raise UserError(f"head={head.name} does not fit model.problem_type={self.name}, which needs {wanted}; "
                            "set head=")

    # ------------------------------------------------------------------ labels
    def label_feature(self) -> Any:
        """The ``datasets`` feature of a normalised label (explicit, so empty label lists keep their type).

        ``datasets`` is imported here, not at module level: training has it loaded already, and
        predict / export / a plain model stay ~80 MB lighter without it.
        """
        import datasets

        return datasets.Value("string")

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        """Raw label cell -> the normalised label stored in the raw splits."""
        raise NotImplementedError

    def label_sets(self, column: Sequence[Any]) -> set[str]:
        """The label names used in one split's normalised label column."""
        return {str(v) for v in column}

    def label_names(self, splits: Mapping[str, Sequence[Any]], sources: Mapping[str, str]) -> list[str]:
        """Sorted training label names; an evaluation label unseen in train is an error.

        ``sources``: each split's origin as the key a user would fix (``data.test_file=...``).
        """
        names = sort_labels(self.label_sets(splits["train"]))
        if len(names) < self.min_train_labels:
            found = names[0] if names else "none"
            raise UserError(f"the training labels hold one class only ({found}); check data.label_column")
        warn_near_duplicate_labels(names)
        for split in ("validation", "test"):
            if split in splits:
                unseen = sorted(self.label_sets(splits[split]) - set(names))
                if unseen:
                    raise UserError(
                        f"labels {unseen} appear in the {split} split but not in train "
                        f"(train labels: {names}); fix {sources[split]}"
                    )
        return names

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        """Normalised label -> the model's target (class id, multi-hot vector, or value)."""
        raise NotImplementedError

    def label_counts(self, labels: Sequence[Any], label2id: Mapping[str, int]) -> list[float]:
        """Training examples per label (positives per label for multi-label)."""
        raise NotImplementedError(f"{self.name} has no per-label counts")

    def auto_weights(self, counts: Sequence[float], num_examples: int) -> list[float]:
        """``model.<weight_key>=auto`` from the training label counts."""
        raise NotImplementedError

    def resolve_weights(self, model_cfg: Mapping[str, Any], train_labels: Callable[[], Sequence[Any]],
                        label2id: Mapping[str, int]) -> dict[str, Any]:
        """``model.class_weights``/``pos_weight``: ``auto`` -> a list from the training labels (kept in hparams)."""
        model_cfg = dict(model_cfg)
        for key in self.checked_weight_keys(model_cfg):
            value = model_cfg[key]
            if value == "auto":
                labels = train_labels()
                model_cfg[key] = self.auto_weights(self.label_counts(labels, label2id), len(labels))
                rank_zero_info(f"model.{key}=auto: {[round(w, 4) for w in model_cfg[key]]}")
            elif isinstance(value, str):
                raise UserError(f"model.{key}={value} is not understood; use auto, a list of numbers or null")
        return model_cfg

    def loss_weights(self, model_cfg: Mapping[str, Any], id2label: Mapping[int, str]) -> torch.Tensor | None:
        """The resolved weights as a tensor of one value per label, or None."""
        if not self.checked_weight_keys(model_cfg):
            return None
        key = self.weight_key
        value = model_cfg[key]
        if isinstance(value, str):
            raise UserError(f"model.{key}={value} must be resolved to a list before the model is built")
        weights = torch.tensor([float(v) for v in value])
        if weights.numel() != len(id2label):
            raise UserError(
                f"model.{key} has {weights.numel()} values for {len(id2label)} labels "
                f"{list(id2label.values())}; fix model.{key}"
            )
        return weights

    def checked_weight_keys(self, model_cfg: Mapping[str, Any]) -> list[str]:
        """The weight keys set in ``model_cfg``; one that belongs to another task is an error."""
        keys = [k for k in WEIGHT_KEYS if model_cfg.get(k) is not None]
        for key in keys:
            if key != self.weight_key:
                raise UserError(f"model.{key} applies to {' and '.join(WEIGHT_KEY_OWNERS[key])} only; "
                                f"set model.{key}=null")
        return keys

    def check_labels(self, id2label: Mapping[int, str]) -> None:
        """A label mapping this task cannot train on ends here."""

    # -------------------------------------------------------------- the model
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> what a user reads (probabilities or values), float32."""
        raise NotImplementedError

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        """The scalar whose gradient says which tokens support the prediction (evidence.py), per
        document: the log-odds of the predicted class, log p / (1 - p). Its gradient does not vanish
        when the model is sure (the log-probability's does: measured, the top-1 span then found the
        evidence in 59 % of documents, bench/results/evidence_logprob_target.json)."""
        logits = logits.float()
        predicted = logits.argmax(-1, keepdim=True)
        others = logits.scatter(-1, predicted, float("-inf")).logsumexp(-1)
        return logits.gather(-1, predicted).squeeze(-1) - others

    def metric_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        raise NotImplementedError

    def update_metrics(self, collection: MetricCollection, outputs: torch.Tensor, batch: Mapping[str, Any]) -> None:
        collection.update(outputs, self.metric_targets(batch["labels"]))

    def bind_references(self, collection: MetricCollection, datamodule: Any, split: str) -> None:
        """Before the metrics of ``split`` (val, test) are computed: what they need besides the batches
        (question answering: the gold texts)."""

    def predict_outputs(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """What predict gathers per batch: here one row of logits per model input."""
        return {"row": batch["row"], "logits": logits, "probs": self.outputs(logits)}

    def confusion(self, num_labels: int) -> Metric | None:
        return None

    def spread(self, values: dict[str, torch.Tensor], stage: str, id2label: Mapping[int, str]) -> dict[str, Any]:
        """Computed metric values -> logged ones: per-class tensors spread by label name, aliases added."""
        per_class = values.pop(f"{stage}/f1_per_class", None)
        if per_class is not None:
            for idx, name in sorted(id2label.items()):
                values[f"{stage}/f1_{metric_key(name)}"] = per_class[idx]
        for alias, source in self.metric_aliases.items():
            values[f"{stage}/{alias}"] = values[f"{stage}/{source}"]
        return values

    def best_trackers(self, metrics: MetricCollection) -> list[str]:
        """Scalar names of ``metrics`` (and their aliases) that get a ``val/<name>_best`` tracker."""
        return [n for n in metrics.keys(keep_base=True) if n != "f1_per_class"] + list(self.metric_aliases)

    # ---------------------------------------------------------------- predict
    def read_documents(self, frame: Any, inputs: Any, source: str, id2label: Mapping[int, str]) -> Documents:
        """An input table -> the documents to predict (one per row): the spec's text columns joined."""
        from ..inputs.documents import row_numbers

        missing = [c for c in inputs.text_columns if c not in frame.columns]
        if missing:
            raise UserError(f"column '{missing[0]}' not in {source} (columns: {', '.join(map(str, frame.columns))}); "
                            "set text_column")
        texts = [inputs.join_text(record) for record in frame[list(inputs.text_columns)].to_dict("records")]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            where = "lines" if source.lower().endswith(".txt") else "rows"
            raise UserError(f"{len(empty)} empty texts in {source} ({where} {row_numbers(empty)}); "
                            "remove them from input")
        return Documents(texts)

    def predict_features(self, documents: Documents, tokenizer: Any, inputs: Any, long_docs: str
                         ) -> list[dict[str, Any]]:
        """The model inputs of the documents, ``row`` = the document (``long_docs``: one input, or windows)."""
        return inputs.encode(tokenizer, documents.texts, long_docs)

    def document_predictions(self, features: Sequence[Mapping[str, torch.Tensor]], documents: Documents,
                             aggregation: str, id2label: Mapping[int, str], threshold: float, inputs: Any = None,
                             top_k: int = 1) -> dict[str, Any]:
        """Per-input outputs (``predict_outputs``, one per feature) -> the predict columns after ``id`` (the project's public contract):
        a document's window logits aggregated (``mean`` or ``max``), then the task's columns."""
        rows = torch.tensor([int(f["row"]) for f in features], dtype=torch.long)
        logits = torch.stack([f["logits"] for f in features]) if features else torch.zeros(0, len(id2label))
        doc_logits = aggregate(rows, logits, len(documents.texts), aggregation)
        return self.prediction_columns(self.outputs(doc_logits), id2label, threshold)

    def prediction_columns(self, outputs: torch.Tensor, id2label: Mapping[int, str],
                           threshold: float) -> dict[str, Any]:
        """The predict columns after ``id`` (the project's public contract), from the documents' outputs."""
        raise NotImplementedError

    @staticmethod
    def probability_columns(outputs: torch.Tensor, id2label: Mapping[int, str]) -> dict[str, Any]:
        return {f"prob_{name}": outputs[:, idx].numpy() for idx, name in sorted(id2label.items())}


@dataclass
class Documents:
    """What predict reads from an input table: the texts, and for a per-token task the words of each
    text with their character spans (``from_tokens``: the texts were built from token lists)."""

    texts: list[str]
    words: list[list[str]] | None = None
    spans: list[list[tuple[int, int]]] | None = None
    from_tokens: bool = False
    questions: list[str] | None = None  #: question answering: each text is a context, asked this


def aggregate(rows: torch.Tensor, logits: torch.Tensor, n_docs: int, how: str) -> torch.Tensor:
    """A document's logits from its windows' (``rows``: each window's document): mean or max."""
    out = torch.full((n_docs, logits.shape[1]), float("-inf") if how == "max" else 0.0)
    if how == "max":
        return out.index_reduce(0, rows, logits, "amax", include_self=True)
    if how == "mean":
        return out.index_add(0, rows, logits) / torch.bincount(rows, minlength=n_docs).clamp_min(1).unsqueeze(1)
    raise UserError(f"unknown chunk_aggregation '{how}'; use mean or max")


def balanced_weights(counts: Sequence[float]) -> list[float]:
    """Inverse frequency, scaled so balanced classes get weight 1 everywhere (sklearn's "balanced")."""
    total = sum(counts)
    return [total / (len(counts) * max(c, 1.0)) for c in counts]


def document_columns(datamodule: Any) -> list[tuple[str, str]]:
    """The text columns and the label column: what a document task reads (and inference needs)."""
    return [*((c, "data.text_column") for c in datamodule.text_columns), (datamodule.label_column, "data.label_column")]


@rank_zero_only
def warn_near_duplicate_labels(names: Sequence[str]) -> None:
    """Labels equal but for case or surrounding / repeated whitespace ("NEGATIVE ", "negative") become
    separate classes, which is almost never what the data meant: one warning line names them (kept
    apart, since a user may mean them apart)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(" ".join(name.split()).casefold(), []).append(name)
    clashes = [group for group in groups.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" / ".join(repr(n) for n in group) for group in clashes)
        log.warning(f"labels that differ only by case or whitespace are separate classes: {shown}; "
                    "clean the label column if they are one class")


def sort_labels(values: set[Any]) -> list[str]:
    """Integer-like labels sort numerically ("2" before "10"), others as strings."""
    as_text = {str(v) for v in values}
    try:
        return [str(v) for v in sorted(as_text, key=lambda v: float(v))]
    except ValueError:
        return sorted(as_text)
