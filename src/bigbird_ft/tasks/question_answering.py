"""Extractive question answering over long contexts (SQuAD's rows: ``question``, ``context``, ``answers``).

Input: ``[CLS] question [SEP] context [SEP]``, the question first so it sits in BigBird's first block,
which every token attends to in block-sparse attention (the global block); a context longer than the
model is cut by the tokenizer into windows that share ``data.chunk_stride`` tokens (HF's
``return_overflowing_tokens``, as transformers' run_qa does), so every context token is scored.

Decoding (validation metrics and predict alike, ``best_spans``): per window, start and end
log-softmax over the context tokens (and [CLS] when null answers are allowed), every span with
``end >= start`` and at most ``data.max_answer_length`` tokens scored ``p(start) * p(end)``; the best
span over all windows wins; its character span is widened to whole words (the tokenizer's own word
boundaries), so ``context[start:end] == answer`` always. Metrics: SQuAD's exact match and token F1
(torchmetrics' implementation of SQuAD's normalisation), as fractions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection

from ..errors import UserError
from ..inputs.documents import row_numbers
from .base import Documents, Task
from .registry import register_task

#: the two outputs per token; they are the model's "labels" (checkpoint id2label, export num_labels)
SPAN_LABELS = ("start", "end")
#: per-token feature keys: a context token's character span (widened to its word), -1 elsewhere
CHAR_KEYS = ("char_starts", "char_ends")


def read_answers(value: Any, row: int, source: str, column: str) -> dict[str, list]:
    """A SQuAD ``answers`` cell (a dict, or its JSON text in a csv) -> ``{"text": [...], "answer_start": [...]}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, Mapping) or "text" not in value or "answer_start" not in value:
        raise UserError(f"row {row + 1} of {source}: '{column}' must hold SQuAD's answers, "
                        '{"text": [...], "answer_start": [...]}; fix that row or set data.answers_column')
    texts, starts = list(value["text"] or []), list(value["answer_start"] or [])
    if len(texts) != len(starts):
        raise UserError(f"row {row + 1} of {source}: {len(texts)} answer texts but {len(starts)} answer_start "
                        "values; fix that row")
    return {"text": [str(t) for t in texts], "answer_start": [int(s) for s in starts]}


def encode_pairs(tokenizer: Any, questions: Sequence[str], contexts: Sequence[str], inputs: Any,
                 rows: Sequence[int], source: str) -> tuple[Any, list[int]]:
    """The windows of every (question, context) pair and, per window, its pair; a question that leaves
    no room for the context in ``data.max_length`` is one line naming its row."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"question answering needs a fast tokenizer (character offsets); {type(tokenizer).__name__} "
                        "is not one: set model.tokenizer to a fast tokenizer")
    question_tokens = tokenizer(list(questions), add_special_tokens=False)["input_ids"]
    room = inputs.max_length - 3 - inputs.stride  # [CLS] q [SEP] c [SEP]; a window must advance
    for row, ids in zip(rows, question_tokens, strict=True):
        if len(ids) >= room:
            raise UserError(f"the question of row {row + 1} of {source} is {len(ids)} tokens: with max_length="
                            f"{inputs.max_length} and chunk_stride={inputs.stride} no context fits beside it; shorten "
                            "the question or raise data.max_length")
    encoded = tokenizer(list(questions), list(contexts), truncation="only_second", max_length=inputs.max_length,
                        stride=inputs.stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    return encoded, list(encoded["overflow_to_sample_mapping"])


def trimmed(context: str, start: int, end: int) -> tuple[int, int]:
    """A span without the whitespace at its edges (a SentencePiece word carries the space before it)."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return start, end


def window_features(encoded: Any, index: int, context: str) -> dict[str, list[int]]:
    """One window: its ids, and per token the character span of the context word it belongs to (-1:
    not a context token). Word spans come from the tokenizer's own pre-tokenisation (``word_to_chars``
    over the whole context), so a word cut by a window edge still maps to the whole word."""
    sequence_ids = encoded.sequence_ids(index)
    word_ids = encoded.word_ids(index)
    offsets = encoded["offset_mapping"][index]
    starts, ends, words = [], [], {}
    for position, sequence in enumerate(sequence_ids):
        word = word_ids[position]
        if sequence != 1 or word is None or offsets[position][1] <= offsets[position][0]:
            starts.append(-1)
            ends.append(-1)
            continue
        if word not in words:
            span = encoded.word_to_chars(index, word, sequence_index=1)
            words[word] = trimmed(context, span.start, span.end)
        starts.append(words[word][0])
        ends.append(words[word][1])
    return {"input_ids": list(encoded["input_ids"][index]), "char_starts": starts, "char_ends": ends,
            "token_starts": [o[0] if s == 1 else -1 for o, s in zip(offsets, sequence_ids, strict=True)],
            "token_ends": [o[1] if s == 1 else -1 for o, s in zip(offsets, sequence_ids, strict=True)]}


def answer_positions(token_starts: Sequence[int], token_ends: Sequence[int], start_char: int,
                     end_char: int) -> tuple[int, int]:
    """The first and last token of ``[start_char, end_char)`` in a window; (0, 0) ([CLS]) when the
    window does not hold the whole answer (run_qa's rule)."""
    inside = [p for p, (s, e) in enumerate(zip(token_starts, token_ends, strict=True))
              if s >= 0 and e > start_char and s < end_char]
    if not inside or token_starts[inside[0]] > start_char or token_ends[inside[-1]] < end_char:
        return 0, 0
    return inside[0], inside[-1]


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context: torch.Tensor,
               max_answer_length: int, null_answers: bool, k: int = 1) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor, torch.Tensor]:
    """Per window (rows of ``[windows, length]``): the ``k`` best spans as (score, start, end), scores
    ``p(start) * p(end)`` with the probabilities normalised over the window's context tokens ([CLS]
    too with ``null_answers``), and the null score ``p(start=[CLS]) * p(end=[CLS])`` (0 without).

    A start ``s`` pairs with ends ``s .. s + max_answer_length - 1``: a ``[windows, length,
    max_answer_length]`` band, not the full length x length square (4,096^2 per window would not fit).
    """
    allowed = context.bool().clone()
    if null_answers:
        allowed[:, 0] = True
    masked_start = start_logits.float().masked_fill(~allowed, float("-inf")).log_softmax(-1)
    masked_end = end_logits.float().masked_fill(~allowed, float("-inf")).log_softmax(-1)
    null = (masked_start[:, 0] + masked_end[:, 0]).exp() if null_answers else start_logits.new_zeros(len(context))
    span_start = masked_start.masked_fill(~context.bool(), float("-inf"))
    span_end = masked_end.masked_fill(~context.bool(), float("-inf"))
    windows, length = span_start.shape
    width = max(1, min(int(max_answer_length), length))
    padded_end = F.pad(span_end, (0, width - 1), value=float("-inf"))
    band = padded_end.unfold(1, width, 1)                       # [windows, length, width]: end = start + j
    scores = span_start.unsqueeze(-1) + band
    top = scores.flatten(1).topk(min(k, length * width), dim=-1)
    starts = torch.div(top.indices, width, rounding_mode="floor")
    return top.values.exp(), starts, starts + top.indices % width, null


class SquadMetrics(Metric):
    """Exact match and token F1 over whole questions: each window's best span is kept, the best over a
    question's windows answers it, and SQuAD's normalisation compares it with the gold answers.

    The gold texts are not tensors: ``references`` (row -> (context, gold answer texts)) is set by the
    task from the DataModule before each evaluation (``bind_references``); every DDP rank holds it,
    and only the per-window spans are synced.
    """

    full_state_update = False

    def __init__(self, max_answer_length: int, null_answers: bool) -> None:
        super().__init__()
        self.max_answer_length, self.null_answers = max_answer_length, null_answers
        self.references: Sequence[tuple[str, list[str]]] = []
        for state in ("rows", "scores", "starts", "ends", "nulls"):
            self.add_state(state, default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, rows: torch.Tensor, char_starts: torch.Tensor,
               char_ends: torch.Tensor) -> None:
        context = char_starts >= 0
        scores, starts, ends, nulls = best_spans(logits[..., 0], logits[..., 1], context, self.max_answer_length,
                                                 self.null_answers)
        self.rows.append(rows)
        self.scores.append(scores[:, 0])
        self.starts.append(char_starts.gather(1, starts).squeeze(1))
        self.ends.append(char_ends.gather(1, ends).squeeze(1))
        self.nulls.append(nulls)

    def compute(self) -> dict[str, torch.Tensor]:
        from torchmetrics.functional.text import squad

        def joined(state: Any) -> list[Any]:
            return (torch.cat(state) if isinstance(state, list) else state).cpu().tolist() if len(state) else []

        rows, scores, starts, ends, nulls = (joined(s) for s in (self.rows, self.scores, self.starts, self.ends,
                                                                 self.nulls))
        if not rows or not self.references:
            return {"exact_match": torch.tensor(0.0), "f1": torch.tensor(0.0)}
        answers = choose_answers(rows, scores, starts, ends, nulls)
        preds, target = [], []
        for row, (start, end) in answers.items():
            context, gold = self.references[row]
            preds.append({"prediction_text": context[start:end], "id": str(row)})
            target.append({"answers": {"text": gold or [""], "answer_start": [0] * max(len(gold), 1)}, "id": str(row)})
        values = squad(preds, target)
        return {"exact_match": values["exact_match"] / 100.0, "f1": values["f1"] / 100.0}


def choose_answers(rows: Sequence[int], scores: Sequence[float], starts: Sequence[int], ends: Sequence[int],
                   nulls: Sequence[float]) -> dict[int, tuple[int, int]]:
    """Per question (row): the character span of its best window's best span, (0, 0) when the null
    answer scores higher than every span (the lowest null score over its windows, as HF's pipeline did)."""
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for row, score, start, end, nul in zip(rows, scores, starts, ends, nulls, strict=True):
        if row not in best or score > best[row][0]:
            best[row] = (score, start, end)
        null[row] = min(null.get(row, 1.0), nul)
    return {row: (0, 0) if null[row] > score or start < 0 else (start, end) for row, (score, start, end) in best.items()}


@register_task
class QuestionAnswering(Task):
    name = "question_answering"
    per_token = True
    pair_input = True
    monitor = ("val/f1", "max")
    metric_aliases: ClassVar[Mapping[str, str]] = {"acc": "exact_match"}
    headline = ("exact_match", "f1")
    min_train_labels = 0

    def hf_problem_type(self) -> str | None:
        return None  # transformers' configs accept the three document problem types only

    # ------------------------------------------------------------------ data
    def input_columns(self, datamodule: Any) -> list[tuple[str, str]]:
        return [(datamodule.question_column, "data.question_column"), (datamodule.context_column, "data.context_column"),
                (datamodule.answers_column, "data.answers_column")]

    def check_rows(self, ds: Any, split: str, source: str, datamodule: Any) -> Any:
        """Empty questions or contexts, answers that are not SQuAD's, an ``answer_start`` that does not
        point at its answer text, and unanswerable rows without ``data.null_answers``: one line, the row."""
        questions, contexts = ds[datamodule.question_column], ds[datamodule.context_column]
        for name, column, key in ((datamodule.question_column, questions, "question"),
                                  (datamodule.context_column, contexts, "context")):
            empty = [i for i, value in enumerate(column) if value is None or not str(value).strip()]
            if empty:
                raise UserError(f"empty {key} in {len(empty)} row(s) of the {split} split of {source} ('{name}'): "
                                f"rows {row_numbers(empty)}; fill or remove them")
        unanswerable = []
        for row, (context, cell) in enumerate(zip(contexts, ds[datamodule.answers_column], strict=True)):
            answers = read_answers(cell, row, f"the {split} split of {source}", datamodule.answers_column)
            if not answers["text"]:
                unanswerable.append(row)
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                if str(context)[start:start + len(text)] != text:
                    found = str(context)[start:start + len(text)]
                    raise UserError(f"row {row + 1} of the {split} split of {source}: answer_start={start} points at "
                                    f"{found!r}, not at the answer {text!r}; fix that row's answer_start")
        if unanswerable and not datamodule.null_answers and split == "train":
            raise UserError(f"{len(unanswerable)} training rows have no answer (rows {row_numbers(unanswerable)}); "
                            "set data.null_answers=true to learn unanswerable questions, or give them answers")
        return ds

    def row_normaliser(self, datamodule: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A row -> ``question``, ``context``, the answers as ``label`` and ``text`` (question and context:
        what ``tokenizer=train`` learns from and split hygiene compares)."""
        question, context, answers = datamodule.question_column, datamodule.context_column, datamodule.answers_column

        def normalise(example: dict[str, Any]) -> dict[str, Any]:
            q, c = str(example[question]), str(example[context])
            return {"question": q, "context": c, "text": f"{q}\n\n{c}",
                    "label": read_answers(example[answers], 0, "the data", answers)}

        return normalise

    def row_features(self) -> dict[str, Any]:
        import datasets

        return {"question": datasets.Value("string"), "context": datasets.Value("string"),
                "text": datasets.Value("string"), "label": self.label_feature()}

    def label_feature(self) -> Any:
        import datasets

        return {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int64"))}

    def label_names(self, splits: Mapping[str, Sequence[Any]], sources: Mapping[str, str]) -> list[str]:
        return list(SPAN_LABELS)

    def check_labels(self, id2label: Mapping[int, str]) -> None:
        if [id2label[i] for i in sorted(id2label)] != list(SPAN_LABELS):
            raise UserError(f"a question answering model has the outputs {list(SPAN_LABELS)}, not "
                            f"{list(id2label.values())}; train it with model.problem_type=question_answering")

    def check_reader(self, reader: Any) -> None:
        if reader.name != "sparse":
            raise UserError(f"reader={reader.name} reads documents for a document label; question answering windows "
                            "long contexts itself (data.chunk_stride): use reader=sparse")

    def check_head(self, head: Any) -> None:
        if not getattr(head, "pair_input", False):
            raise UserError(f"head={head.name} does not fit model.problem_type=question_answering, which needs a start "
                            "and an end logit per token: set head=span")

    def batch_encoder(self, tokenizer: Any, inputs: Any, label2id: Mapping[str, int], train: bool = False
                      ) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
        def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            encoded, pairs = encode_pairs(tokenizer, batch["question"], batch["context"], inputs, indices, "the data")
            out: dict[str, list] = {"input_ids": [], "labels": [], "row": [], "length": [], **{k: [] for k in CHAR_KEYS}}
            for index, pair in enumerate(pairs):
                window = window_features(encoded, index, batch["context"][pair])
                answers = batch["label"][pair]
                if answers["text"]:  # the first gold answer is the target (run_qa's choice)
                    start = answers["answer_start"][0]
                    target = answer_positions(window["token_starts"], window["token_ends"], start,
                                              start + len(answers["text"][0]))
                else:
                    target = (0, 0)
                out["input_ids"].append(window["input_ids"])
                out["labels"].append(list(target))
                out["row"].append(indices[pair])
                out["length"].append(len(window["input_ids"]))
                for key in CHAR_KEYS:
                    out[key].append(window[key])
            return out

        return encode

    def stack_labels(self, labels: Sequence[Any], length: int) -> torch.Tensor:
        return torch.tensor([list(pair) for pair in labels], dtype=torch.long)

    # ----------------------------------------------------------------- model
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None,
             label_smoothing: float) -> torch.Tensor:
        """The mean of the start and the end cross-entropy over a window's positions (HF's loss)."""
        logits = logits.float()
        return (F.cross_entropy(logits[..., 0], labels[:, 0], label_smoothing=label_smoothing)
                + F.cross_entropy(logits[..., 1], labels[:, 1], label_smoothing=label_smoothing)) / 2

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def evidence_target(self, logits: torch.Tensor) -> torch.Tensor:
        raise UserError("evidence explains document labels; this model answers questions: drop evidence")

    def metrics(self, num_labels: int, threshold: float, id2label: Mapping[int, str] | None = None,
                inputs: Any = None) -> MetricCollection:
        return MetricCollection({"squad": SquadMetrics(getattr(inputs, "max_answer_length", 30),
                                                       bool(getattr(inputs, "null_answers", False)))})

    def update_metrics(self, collection: MetricCollection, outputs: torch.Tensor, batch: Mapping[str, Any]) -> None:
        collection.update(outputs, rows=batch["row"], char_starts=batch["char_starts"], char_ends=batch["char_ends"])

    def bind_references(self, collection: MetricCollection, datamodule: Any, split: str) -> None:
        """The gold answers of ``split`` (``val`` or ``test``) by row, from the DataModule's raw split (see
        ``SquadMetrics``)."""
        split = {"val": "validation"}.get(split, split)
        raw = getattr(datamodule, "raw", None)
        if raw is None or split not in raw:
            return
        references = list(zip(raw[split]["context"], (a["text"] for a in raw[split]["label"]), strict=True))
        for metric in collection.values():
            metric.references = references

    def best_trackers(self, metrics: MetricCollection) -> list[str]:
        return ["exact_match", "f1", "acc"]

    def predict_outputs(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"row": batch["row"], "logits": logits.float(), "char_starts": batch["char_starts"],
                "char_ends": batch["char_ends"]}

    # --------------------------------------------------------------- predict
    def read_documents(self, frame: Any, inputs: Any, source: str, id2label: Mapping[int, str]) -> Documents:
        """The contexts are the documents; each row's question rides along."""
        missing = [c for c in (inputs.question_column, inputs.context_column) if c not in frame.columns]
        if missing:
            raise UserError(f"column '{missing[0]}' not in {source} (columns: {', '.join(map(str, frame.columns))}); "
                            "set question_column / context_column")
        questions = ["" if q is None else str(q) for q in frame[inputs.question_column].tolist()]
        contexts = ["" if c is None else str(c) for c in frame[inputs.context_column].tolist()]
        for what, values in (("questions", questions), ("contexts", contexts)):
            empty = [i for i, t in enumerate(values) if not t.strip()]
            if empty:
                raise UserError(f"{len(empty)} empty {what} in {source} (rows {row_numbers(empty)}); remove them from input")
        return Documents(contexts, questions=questions)

    def predict_features(self, documents: Documents, tokenizer: Any, inputs: Any, long_docs: str
                         ) -> list[dict[str, Any]]:
        """Every window of every context (``long_docs`` is ignored: a context is always read whole)."""
        inputs.check(windows=True)
        rows = list(range(len(documents.texts)))
        encoded, pairs = encode_pairs(tokenizer, documents.questions or [], documents.texts, inputs, rows, "the input")
        features = []
        for index, pair in enumerate(pairs):
            window = window_features(encoded, index, documents.texts[pair])
            features.append({"input_ids": window["input_ids"], "row": pair, **{k: window[k] for k in CHAR_KEYS}})
        return features

    def document_predictions(self, features: Sequence[Mapping[str, torch.Tensor]], documents: Documents,
                             aggregation: str, id2label: Mapping[int, str], threshold: float, inputs: Any = None,
                             top_k: int = 1) -> dict[str, Any]:
        """``answer``, ``start``, ``end`` (``context[start:end] == answer``) and ``score`` per row; with
        ``top_k`` > 1 also ``answers``, the k best distinct spans over all windows."""
        max_answer_length = int(getattr(inputs, "max_answer_length", 30))
        null_answers = bool(getattr(inputs, "null_answers", False))
        candidates: dict[int, list[tuple[float, int, int]]] = {}
        nulls: dict[int, float] = {}
        for feature in features:
            row = int(feature["row"])
            context = feature["char_starts"] >= 0
            scores, starts, ends, null = best_spans(feature["logits"][None, :, 0], feature["logits"][None, :, 1],
                                                    context[None], max_answer_length, null_answers, max(top_k, 1))
            for score, start, end in zip(scores[0].tolist(), starts[0].tolist(), ends[0].tolist(), strict=True):
                if score > 0:
                    candidates.setdefault(row, []).append(
                        (score, int(feature["char_starts"][start]), int(feature["char_ends"][end])))
            nulls[row] = min(nulls.get(row, 1.0), float(null[0]))
        columns: dict[str, list[Any]] = {"answer": [], "start": [], "end": [], "score": []}
        alternatives = []
        for row, context in enumerate(documents.texts):
            ranked, seen = [], set()
            for score, start, end in sorted(candidates.get(row, []), key=lambda c: -c[0]):
                if (start, end) not in seen:
                    seen.add((start, end))
                    ranked.append({"answer": context[start:end], "start": start, "end": end, "score": round(score, 6)})
            if null_answers and (not ranked or nulls.get(row, 0.0) > ranked[0]["score"]):
                ranked.insert(0, {"answer": "", "start": 0, "end": 0, "score": round(nulls.get(row, 0.0), 6)})
            if not ranked:
                ranked = [{"answer": "", "start": 0, "end": 0, "score": 0.0}]
            for key in columns:
                columns[key].append(ranked[0][key])
            alternatives.append(ranked[:top_k])
        if top_k > 1:
            columns["answers"] = alternatives
        return columns
