"""predict.py for a per-token model: every input word tagged once, entities as character spans.

Input rows hold either the word list of training (``data.tokens_column``; the document text is then
the words joined by single spaces, written as the ``text`` column so that every span can be
checked) or a raw text (``text_column``), split into words and single punctuation marks
(``WORD_PATTERN``) with their character offsets in that text. Long documents are cut into windows
(``max_length``, ``chunk_stride`` tokens shared) and each word takes its tag from the one window
that owns it (``tasks/token_classification.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from .data.collate import BlockPaddingCollator
from .distributed import ddp_job_scope, gather_objects, predict_strategy
from .errors import UserError
from .io_utils import atomic_path
from .module import BigBirdClassifier
from .tasks.token_classification import WORD_PATTERN, encode_words, is_prefixed, seqeval_tags, word_features


def document_words(frame: pd.DataFrame, tokens_column: str, text_column: str, source: str
                   ) -> tuple[list[str], list[list[str]], list[list[tuple[int, int]]], bool]:
    """(texts, words, each word's (start, end) in its text, whether the texts were built from token lists)."""
    if tokens_column in frame.columns:
        texts, words, spans = [], [], []
        for row, value in enumerate(frame[tokens_column].tolist()):
            if not isinstance(value, list | tuple):
                raise UserError(f"column '{tokens_column}' of {source} holds {type(value).__name__}, not a list of "
                                f"words (row {row + 1}); give token lists or a text column (text_column=)")
            doc = [str(w) for w in value]
            starts = [sum(len(w) + 1 for w in doc[:i]) for i in range(len(doc))]
            texts.append(" ".join(doc))
            words.append(doc)
            spans.append([(s, s + len(w)) for s, w in zip(starts, doc, strict=True)])
        return texts, words, spans, True
    if text_column not in frame.columns:
        raise UserError(f"neither the token column '{tokens_column}' nor the text column '{text_column}' is in "
                        f"{source} (columns: {', '.join(map(str, frame.columns))}); set text_column")
    texts = [str(t) for t in frame[text_column].tolist()]
    matches = [list(WORD_PATTERN.finditer(t)) for t in texts]
    return texts, [[m.group() for m in doc] for doc in matches], [[m.span() for m in doc] for doc in matches], False


def check_known_tags(frame: pd.DataFrame, tags_column: str, names: set[str], source: str) -> None:
    """Gold tags in the input (a labelled file) must be tags this model knows: else the file and the
    model do not belong together."""
    if tags_column not in frame.columns:
        return
    for row, tags in enumerate(frame[tags_column].tolist()):
        unknown = sorted({str(t) for t in (tags if isinstance(tags, list | tuple) else [tags])} - names)
        if unknown:
            raise UserError(f"tag {unknown[0]!r} in row {row + 1} of {source} ('{tags_column}') is not one of the "
                            f"model's tags {sorted(names)}; predict with the model trained on these tags")


class GatherWordProbabilities(BasePredictionWriter):
    """Each rank's (document, word, probabilities), gathered on every rank, each word once."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.words: dict[tuple[int, int], torch.Tensor] = {}

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        mine = [(o["row"], o["word"], o["probs"]) for o in predictions]
        for rows, words, probs in (part for rank in gather_objects(mine) for part in rank):
            for row, word, prob in zip(rows.tolist(), words.tolist(), probs, strict=True):
                self.words.setdefault((row, word), prob)  # DDP may repeat a window: keep one


def entities(tags: list[str], scores: list[float], spans: list[tuple[int, int]], text: str) -> list[dict[str, Any]]:
    """seqeval's chunking of the word tags, each entity as a character span of ``text``."""
    from seqeval.metrics.sequence_labeling import get_entities

    found = []
    for label, first, last in get_entities(seqeval_tags(tags, is_prefixed(tags))):
        start, end = spans[first][0], spans[last][1]
        found.append({"start": start, "end": end, "text": text[start:end], "label": label,
                      "score": round(sum(scores[first:last + 1]) / (last - first + 1), 6)})
    return found


def tag_documents(cfg: DictConfig, module: BigBirdClassifier, frame: pd.DataFrame, output: Path, stride: int) -> Path:
    data_hp = module.hparams.data or {}
    source = str(cfg.input)
    tokens_column = str(data_hp.get("tokens_column", "tokens"))
    check_known_tags(frame, str(data_hp.get("tags_column", "ner_tags")), set(module.id2label.values()), source)
    text_column = cfg.get("text_column") or "text"
    texts, words, spans, from_tokens = document_words(frame, tokens_column, str(text_column), source)
    empty = [i for i, doc in enumerate(words) if not doc]
    if empty:
        raise UserError(f"{len(empty)} documents without words in {source} (rows {[i + 1 for i in empty[:5]]}); "
                        "remove them from input")
    max_length = int(cfg.get("max_length") or data_hp.get("max_length", 4096))
    if not 0 <= stride < max_length - 2:
        raise UserError(f"chunk_stride={stride} must be in [0, {max_length - 2}) for max_length={max_length}")
    tokenizer = module.tokenizer
    ids, word_ids = encode_words(tokenizer, words)
    features = [{**feature, "row": row}
                for row, (doc_ids, doc_words) in enumerate(zip(ids, word_ids, strict=True))
                for feature in word_features(doc_ids, doc_words, None, max_length - 2, stride,
                                             tokenizer.cls_token_id, tokenizer.sep_token_id)]
    features.sort(key=lambda f: len(f["input_ids"]))
    batch_size = int(cfg.get("batch_size") or data_hp.get("eval_batch_size", 8))
    multiple = int(data_hp.get("pad_to_multiple_of", module.hparams.model["block_size"]))
    loader = DataLoader(features, batch_size=batch_size, collate_fn=BlockPaddingCollator(tokenizer, multiple))
    gathered = GatherWordProbabilities()
    trainer = L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, strategy=predict_strategy(cfg.get("strategy")
                        or "auto"), precision=cfg.precision, logger=False, callbacks=[RichProgressBar(), gathered],
                        enable_checkpointing=False)
    with ddp_job_scope():
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return output
    names = module.id2label
    rows = []
    for row, doc in enumerate(words):
        probs = [gathered.words.get((row, w)) for w in range(len(doc))]
        if any(p is None for p in probs):  # word_features gives every word an owner window
            raise RuntimeError(f"document {row}: {sum(p is None for p in probs)} words got no tag")
        best = [(names[int(p.argmax())], float(p.max())) for p in probs]
        tags = [tag for tag, _ in best]
        rows.append({"tags": tags, "entities": entities(tags, [s for _, s in best], spans[row], texts[row])})
    id_column = cfg.get("id_column") or "id"
    result = pd.DataFrame({"id": frame[id_column].tolist() if id_column in frame.columns else list(range(len(frame)))})
    if from_tokens:
        result["text"] = texts
    csv = output.suffix.lower() == ".csv"
    import json

    for key in ("tags", "entities"):
        result[key] = [json.dumps(r[key], ensure_ascii=False) if csv else r[key] for r in rows]
    with atomic_path(output) as tmp:
        if csv:
            result.to_csv(tmp, index=False)
        else:
            result.to_json(tmp, orient="records", lines=True, force_ascii=False)
    print(f"Wrote the tags of {len(result)} documents to {output}")
    return output
