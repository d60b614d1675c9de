"""One tag per word of a long document (entity tagging): the words and tags come as two lists per row.

Alignment (as HF's run_ner): a word's tag goes to its first sub-word; the other sub-words and the
special tokens get -100, which the loss and the metrics ignore. A document longer than
``data.max_length`` is cut into windows that share ``data.chunk_stride`` tokens; every word belongs
to exactly one window, the one where its first sub-word has the most context on both sides, so each
word is trained on, evaluated and predicted once.

Metrics: token accuracy over words, and seqeval's entity-level F1 (micro, and per entity type) over
whole documents (windows are put back together by document and word index first). Tags without a
B-/I-/E-/S- prefix are read as the IO scheme: a maximal run of one tag is one entity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection

from ..errors import UserError
from ..inputs.documents import row_numbers
from .base import Documents, Task, balanced_weights, metric_key
from .registry import register_task

IGNORED = -100
#: what splits a raw text into words at predict when the input has no token list: word characters
#: or single punctuation marks, the way CoNLL-style corpora split their tokens
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
PREFIXED = re.compile(r"^[BIES]-.")


def is_prefixed(tags: Sequence[str]) -> bool:
    """BIO/BIOES tags (``B-PER``) or plain ones (``PER``, read as IO)."""
    return any(PREFIXED.match(tag) for tag in tags if tag != "O")


def seqeval_tags(tags: Sequence[str], prefixed: bool) -> list[str]:
    return list(tags) if prefixed else [tag if tag == "O" else f"I-{tag}" for tag in tags]


def window_owners(first_positions: Sequence[int], starts: Sequence[int], body: int) -> list[int]:
    """For each word (the position of its first sub-word), the window that tags it: among the
    windows holding that position, the one where it is farthest from both window edges."""
    owners = []
    for position in first_positions:
        best, best_context = 0, -1
        for index, start in enumerate(starts):
            if start <= position < start + body:
                context = min(position - start, start + body - 1 - position)
                if context > best_context:
                    best, best_context = index, context
        owners.append(best)
    return owners


def word_features(ids: Sequence[int], word_ids: Sequence[int | None], tags: Sequence[int] | None,
                  inputs: Any, cls_id: int, sep_id: int) -> list[dict[str, list[int]]]:
    """One document's model inputs: the spec's overlapping windows of sub-words, with per token the
    owned word's index (``word_ids``, else -1) and tag (``labels``, else -100)."""
    firsts: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in firsts:
            firsts[word] = position
    words = sorted(firsts)
    windows = inputs.windows(ids, cls_id, sep_id, "chunk")
    owners = dict(zip(words, window_owners([firsts[w] for w in words], [s for s, _ in windows], inputs.body),
                      strict=True))
    features = []
    for index, (start, window) in enumerate(windows):
        span = range(start, start + len(window) - 2)
        owned = [word_ids[p] if word_ids[p] is not None and firsts[word_ids[p]] == p
                 and owners[word_ids[p]] == index else -1 for p in span]
        feature = {"input_ids": window, "word_ids": [-1, *owned, -1]}
        if tags is not None:
            feature["labels"] = [IGNORED, *(tags[w] if w >= 0 else IGNORED for w in owned), IGNORED]
        features.append(feature)
    return features


def encode_words(tokenizer: Any, words: list[list[str]]) -> tuple[list[list[int]], list[list[int | None]]]:
    """Sub-word ids and each sub-word's word index (a fast tokenizer's ``word_ids``)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"token classification needs a fast tokenizer (word alignment); "
                        f"{type(tokenizer).__name__} is not one: set model.tokenizer to a fast tokenizer")
    encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    return encoded["input_ids"], [encoded.word_ids(i) for i in range(len(words))]


def check_known_tags(frame: Any, tags_column: str, names: set[str], source: str) -> None:
    """Gold tags in the input (a labelled file) must be tags this model knows: else the file and the
    model do not belong together."""
    if tags_column not in frame.columns:
        return
    for row, tags in enumerate(frame[tags_column].tolist()):
        unknown = sorted({str(t) for t in (tags if isinstance(tags, list | tuple) else [tags])} - names)
        if unknown:
            raise UserError(f"tag {unknown[0]!r} in row {row + 1} of {source} ('{tags_column}') is not one of the "
                            f"model's tags {sorted(names)}; predict with the model trained on these tags")


def entities(tags: list[str], scores: list[float], spans: list[tuple[int, int]], text: str) -> list[dict[str, Any]]:
    """seqeval's chunking of the word tags, each entity as a character span of ``text``."""
    from seqeval.metrics.sequence_labeling import get_entities

    found = []
    for label, first, last in get_entities(seqeval_tags(tags, is_prefixed(tags))):
        start, end = spans[first][0], spans[last][1]
        found.append({"start": start, "end": end, "text": text[start:end], "label": label,
                      "score": round(sum(scores[first:last + 1]) / (last - first + 1), 6)})
    return found


class EntityMetrics(Metric):
    """Token accuracy and seqeval entity F1 over whole documents; per-word states synced under DDP."""

    full_state_update = False

    def __init__(self, id2label: Mapping[int, str]) -> None:
        super().__init__()
        self.names = [id2label[i] for i in range(len(id2label))]
        self.prefixed = is_prefixed(self.names)
        for state in ("preds", "target", "rows", "words"):
            self.add_state(state, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, row: torch.Tensor, word_ids: torch.Tensor) -> None:
        keep = (word_ids >= 0) & (target != IGNORED)
        self.preds.append(preds.argmax(-1)[keep])
        self.target.append(target[keep])
        self.rows.append(row[:, None].expand_as(word_ids)[keep])
        self.words.append(word_ids[keep])

    def compute(self) -> dict[str, torch.Tensor]:
        from seqeval.metrics import classification_report

        def joined(state: Any) -> torch.Tensor:
            return torch.cat(state) if isinstance(state, list) else state

        preds, target, rows, words = (joined(s).cpu() for s in (self.preds, self.target, self.rows, self.words))
        if len(target) == 0:
            return {"acc": torch.tensor(0.0), "f1": torch.tensor(0.0)}
        # documents in order, words in order: entities spanning two windows are whole again
        order = torch.argsort(rows * (int(words.max()) + 1) + words)
        preds, target, rows = preds[order].tolist(), target[order].tolist(), rows[order].tolist()
        gold, guess, start = [], [], 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end] != rows[start]:
                gold.append(seqeval_tags([self.names[t] for t in target[start:end]], self.prefixed))
                guess.append(seqeval_tags([self.names[p] for p in preds[start:end]], self.prefixed))
                start = end
        report = classification_report(gold, guess, output_dict=True, zero_division=0)
        values = {"acc": torch.tensor(sum(p == t for p, t in zip(preds, target, strict=True)) / len(target)),
                  "f1": torch.tensor(float(report["micro avg"]["f1-score"]))}
        for entity, scores in report.items():
            if entity not in ("micro avg", "macro avg", "weighted avg"):
                values[f"f1_{metric_key(entity)}"] = torch.tensor(float(scores["f1-score"]))
        return values


@register_task
class TokenClassification(Task):
    name = "token_classification"
    weight_key = "class_weights"  # per tag: entities are a fraction of a percent of a long document's words
    per_token = True
    monitor = ("val/f1", "max")

    #: what each data row must hold: the data keys naming the two list columns
    COLUMN_KEYS: ClassVar[tuple[str, str]] = ("data.tokens_column", "data.tags_column")

    def hf_problem_type(self) -> str | None:
        return None  # transformers' configs accept the three document problem types only

    # ------------------------------------------------------------------ data
    def input_columns(self, datamodule: Any) -> list[tuple[str, str]]:
        return [(datamodule.tokens_column, "data.tokens_column"), (datamodule.tags_column, "data.tags_column")]

    def label_feature(self) -> Any:
        import datasets

        return datasets.List(datasets.Value("string"))

    def check_rows(self, ds: Any, split: str, source: str, datamodule: Any) -> Any:
        """Token lists that are lists of words, tag lists of the same length, no empty document."""
        tokens_key, tags_key = self.COLUMN_KEYS
        tokens, tags = ds[datamodule.tokens_column], ds[datamodule.tags_column]
        for name, column, key in ((datamodule.tokens_column, tokens, tokens_key), (datamodule.tags_column, tags, tags_key)):
            bad = next((i for i, value in enumerate(column) if not isinstance(value, list | tuple)), None)
            if bad is not None:
                raise UserError(f"column '{name}' of the {split} split of {source} holds "
                                f"{type(column[bad]).__name__}, not a list (row {bad + 1}); set {key} to a column of "
                                "lists, one entry per word")
        uneven = [i for i, (words, labels) in enumerate(zip(tokens, tags, strict=True)) if len(words) != len(labels)]
        if uneven:
            first = uneven[0]
            raise UserError(f"{len(uneven)} row(s) of the {split} split of {source} have token and tag lists of "
                            f"different lengths (row {first + 1}: {len(tokens[first])} tokens, {len(tags[first])} tags; "
                            f"rows {row_numbers(uneven)}); fix those rows")
        empty = [i for i, words in enumerate(tokens) if not any(str(w).strip() for w in words)]
        if empty:
            raise UserError(f"empty token list in {len(empty)} row(s) of the {split} split of {source}: "
                            f"rows {row_numbers(empty)}; remove them")
        missing = [i for i, labels in enumerate(tags) if any(t is None or not str(t).strip() for t in labels)]
        if missing:
            raise UserError(f"missing tag in {len(missing)} row(s) of the {split} split of {source}: "
                            f"rows {row_numbers(missing)}; fill them")
        return ds

    def row_normaliser(self, datamodule: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A row -> its ``words``, their ``text`` (joined by spaces: what ``tokenizer=train`` learns
        from) and the tag list as ``label``."""
        tokens, tags = datamodule.tokens_column, datamodule.tags_column

        def normalise(example: dict[str, Any]) -> dict[str, Any]:
            words = [str(w) for w in example[tokens]]
            return {"text": " ".join(words), "words": words, "label": [str(t) for t in example[tags]]}

        return normalise

    def row_features(self) -> dict[str, Any]:
        import datasets

        return {**super().row_features(), "words": datasets.List(datasets.Value("string"))}

    def normaliser(self, source: str, separator: str | None) -> Callable[[Any], Any]:
        return lambda tags: [str(t) for t in tags]

    def label_sets(self, column: Sequence[Any]) -> set[str]:
        return {tag for row in column for tag in row}

    def label_encoder(self, label2id: Mapping[str, int]) -> Callable[[Any], Any]:
        return lambda tags: [label2id[t] for t in tags]

    def label_counts(self, labels: Sequence[Any], label2id: Mapping[str, int]) -> list[float]:
        counts = [0.0] * len(label2id)
        for tags in labels:
            for tag in tags:
                counts[label2id[tag]] += 1.0
        return counts

    def auto_weights(self, counts: Sequence[float], num_examples: int) -> list[float]:
        return balanced_weights(counts)

    def check_labels(self, id2label: Mapping[int, str]) -> None:
        if len(id2label) < 2:
            raise UserError(f"the training tags hold one tag only ({list(id2label.values())}); check data.tags_column")

    def check_reader(self, reader: Any) -> None:
        if reader.name != "sparse":
            raise UserError(f"reader={reader.name} reads documents for a document label; token classification "
                            "windows long documents itself (data.chunk_stride): use reader=sparse")

    def batch_encoder(self, tokenizer: Any, inputs: Any, label2id: Mapping[str, int], train: bool = False
                      ) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
        encode_label = self.label_encoder(label2id)

        def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            ids, word_ids = encode_words(tokenizer, batch["words"])
            out: dict[str, list] = {"input_ids": [], "labels": [], "word_ids": [], "row": [], "length": []}
            for row, doc_ids, doc_words, tags in zip(indices, ids, word_ids, batch["label"], strict=True):
                for feature in word_features(doc_ids, doc_words, encode_label(tags), inputs,
                                             tokenizer.cls_token_id, tokenizer.sep_token_id):
                    for key, value in feature.items():
                        out[key].append(value)
                    out["row"].append(row)
                    out["length"].append(len(feature["input_ids"]))
            return out

        return encode

    def stack_labels(self, labels: Sequence[Any], length: int) -> torch.Tensor:
        return torch.tensor([list(row) + [IGNORED] * (length - len(row)) for row in labels], dtype=torch.long)

    # ----------------------------------------------------------------- model
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), weight=weights,
                               ignore_index=IGNORED, label_smoothing=label_smoothing)

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(-1)

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        raise UserError("evidence explains document labels; this model tags words: drop evidence")

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        return MetricCollection({"entities": EntityMetrics(id2label or {i: str(i) for i in range(num_labels)})})

    def update_metrics(self, collection: MetricCollection, outputs: torch.Tensor, batch: Mapping[str, Any]) -> None:
        collection.update(outputs, batch["labels"], row=batch["row"], word_ids=batch["word_ids"])

    def best_trackers(self, metrics: MetricCollection) -> list[str]:
        return ["acc", "f1"]

    def predict_outputs(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per input: its document, the word each position tags (-1: none) and the tag probabilities."""
        return {"row": batch["row"], "word_ids": batch["word_ids"], "probs": self.outputs(logits)}

    # --------------------------------------------------------------- predict
    def read_documents(self, frame: Any, inputs: Any, source: str, id2label: Mapping[int, str]) -> Documents:
        """Each row's word list (``data.tokens_column``: the text is then the words joined by single
        spaces, written out as ``text`` so every span can be checked) or a raw text split into words
        and single punctuation marks (``WORD_PATTERN``) with their character offsets."""
        check_known_tags(frame, inputs.tags_column, set(id2label.values()), source)
        tokens_column, text_column = inputs.tokens_column, inputs.text_columns[0]
        if tokens_column in frame.columns:
            texts, words, spans = [], [], []
            for row, value in enumerate(frame[tokens_column].tolist()):
                if not isinstance(value, list | tuple):
                    raise UserError(f"column '{tokens_column}' of {source} holds {type(value).__name__}, not a list "
                                    f"of words (row {row + 1}); give token lists or a text column (text_column=)")
                doc = [str(w) for w in value]
                starts = [sum(len(w) + 1 for w in doc[:i]) for i in range(len(doc))]
                texts.append(" ".join(doc))
                words.append(doc)
                spans.append([(s, s + len(w)) for s, w in zip(starts, doc, strict=True)])
            documents = Documents(texts, words, spans, from_tokens=True)
        elif text_column in frame.columns:
            texts = [str(t) for t in frame[text_column].tolist()]
            matches = [list(WORD_PATTERN.finditer(t)) for t in texts]
            documents = Documents(texts, [[m.group() for m in doc] for doc in matches],
                                  [[m.span() for m in doc] for doc in matches])
        else:
            raise UserError(f"neither the token column '{tokens_column}' nor the text column '{text_column}' is in "
                            f"{source} (columns: {', '.join(map(str, frame.columns))}); set text_column")
        empty = [i for i, doc in enumerate(documents.words or []) if not doc]
        if empty:
            raise UserError(f"{len(empty)} documents without words in {source} (rows {row_numbers(empty)}); "
                            "remove them from input")
        return documents

    def predict_features(self, documents: Documents, tokenizer: Any, inputs: Any, long_docs: str
                         ) -> list[dict[str, Any]]:
        """Every word tagged once: the spec's windows, each word owned by one of them (``long_docs`` is
        ignored: a document is always read whole)."""
        inputs.check(windows=True)
        ids, word_ids = encode_words(tokenizer, documents.words or [])
        return [{**feature, "row": row}
                for row, (doc_ids, doc_words) in enumerate(zip(ids, word_ids, strict=True))
                for feature in word_features(doc_ids, doc_words, None, inputs, tokenizer.cls_token_id,
                                             tokenizer.sep_token_id)]

    def document_predictions(self, features: Sequence[Mapping[str, torch.Tensor]], documents: Documents,
                             aggregation: str, id2label: Mapping[int, str], threshold: float, inputs: Any = None,
                             top_k: int = 1) -> dict[str, Any]:
        """``tags`` (one per word) and ``entities`` (character spans of the text); ``text`` when the
        input held token lists."""
        words: dict[tuple[int, int], torch.Tensor] = {}
        for feature in features:
            row = int(feature["row"])
            for position in (feature["word_ids"] >= 0).nonzero().flatten().tolist():
                words.setdefault((row, int(feature["word_ids"][position])), feature["probs"][position])
        tags, found = [], []
        for row, doc in enumerate(documents.words or []):
            probs = [words.get((row, w)) for w in range(len(doc))]
            if any(p is None for p in probs):  # word_features gives every word an owner window
                raise RuntimeError(f"document {row}: {sum(p is None for p in probs)} words got no tag")
            best = [(id2label[int(p.argmax())], float(p.max())) for p in probs]
            tags.append([tag for tag, _ in best])
            found.append(entities(tags[-1], [score for _, score in best], documents.spans[row], documents.texts[row]))
        return {**({"text": documents.texts} if documents.from_tokens else {}), "tags": tags, "entities": found}
