"""A generated long-range classification task that needs no download.

Documents are roughly 512-4096 tokens of pseudo-words drawn with Zipf-like frequencies. The
label is decided by one short evidence phrase of class-specific marker words, placed at a
uniformly random position. With lengths uniform in [512, 4096], the evidence lies past token 512
in about 70 % of documents (E[512/L] ~ 0.30): a model that truncates to 512 tokens guesses there.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_path

CONSONANTS = list("bdfgklmnprstvz")
VOWELS = list("aeiou")
DEFAULT_LABELS = ("north", "south", "east", "west")


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 1234
    num_train: int = 2400
    num_validation: int = 200
    num_test: int = 400
    labels: tuple[str, ...] = DEFAULT_LABELS
    min_words: int = 480
    max_words: int = 3800
    noise_vocab_size: int = 3000
    zipf_exponent: float = 1.1
    markers_per_class: int = 3
    evidence_words: int = 4
    sentence_words: tuple[int, int] = (8, 24)
    version: int = field(default=1)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def _pseudo_words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        syllables = rng.integers(1, 4)
        word = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(CONSONANTS)
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


class SyntheticCorpus:
    """Vocabulary and marker words fixed by the seed; documents drawn per split."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        taken: set[str] = set()
        self.noise_words = np.array(_pseudo_words(rng, spec.noise_vocab_size, taken))
        ranks = np.arange(1, spec.noise_vocab_size + 1, dtype=np.float64)
        weights = ranks ** (-spec.zipf_exponent)
        self.noise_probs = weights / weights.sum()
        # markers are longer words from a disjoint set, so they never occur as noise
        self.markers = {
            label: [w + "x" for w in _pseudo_words(rng, spec.markers_per_class, taken)] for label in spec.labels
        }

    def document(self, rng: np.random.Generator, label: str) -> tuple[str, int]:
        spec = self.spec
        n_words = int(rng.integers(spec.min_words, spec.max_words + 1))
        words = list(rng.choice(self.noise_words, size=n_words, p=self.noise_probs))
        evidence = list(rng.choice(self.markers[label], size=spec.evidence_words))
        position = int(rng.integers(0, n_words + 1))
        words[position:position] = evidence
        sentences, start = [], 0
        while start < len(words):
            length = int(rng.integers(spec.sentence_words[0], spec.sentence_words[1] + 1))
            sentence = " ".join(words[start : start + length])
            sentences.append(sentence + ".")
            start += length
        return " ".join(sentences), position

    def split(self, name: str, size: int) -> list[dict]:
        offset = {"train": 1, "validation": 2, "test": 3}[name]
        rng = np.random.default_rng([self.spec.seed, offset])
        labels = rng.choice(len(self.spec.labels), size=size)
        rows = []
        for i, label_idx in enumerate(labels):
            label = self.spec.labels[int(label_idx)]
            text, position = self.document(rng, label)
            rows.append({"id": f"{name}-{i:05d}", "text": text, "label": label, "evidence_word": position})
        return rows


def write_generated(out_dir: str | Path, prefix: str, spec: Any, make_split: Any) -> dict[str, Path]:
    """train/validation/test jsonl under ``out_dir/<prefix>-<spec key>`` (rows from
    ``make_split(name, size)``) with the spec next to them; reused when present: a generated
    corpus is keyed by its spec."""
    folder = Path(out_dir) / f"{prefix}-{spec.key()}"
    sizes = {"train": spec.num_train, "validation": spec.num_validation, "test": spec.num_test}
    paths = {name: folder / f"{name}.jsonl" for name in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    for name, size in sizes.items():
        if not paths[name].exists():
            with atomic_path(paths[name]) as tmp, tmp.open("w") as handle:
                for row in make_split(name, size):
                    handle.write(json.dumps(row) + "\n")
    with atomic_path(folder / "spec.json") as tmp:
        tmp.write_text(json.dumps(asdict(spec), indent=2))
    return paths


def generate(spec: SyntheticSpec, out_dir: str | Path) -> dict[str, Path]:
    """The classification corpus under ``out_dir/synthetic-<key>``."""
    return write_generated(out_dir, "synthetic", spec, lambda name, size: SyntheticCorpus(spec).split(name, size))


def evidence_char_span(row: dict, evidence_words: int = SyntheticSpec.evidence_words) -> tuple[int, int]:
    """Character offsets of a generated row's evidence phrase (its ``evidence_word``-th word onwards;
    a sentence may end inside it, so a marker may carry a period)."""
    words = list(re.finditer(r"\S+", row["text"]))
    first, last = words[row["evidence_word"]], words[row["evidence_word"] + evidence_words - 1]
    return first.start(), last.end()


def evidence_token_start(tokenizer: Any, row: dict) -> int:
    """Index of the first evidence token in the model input ([CLS] = 0) of a generated row.

    The text's whitespace-separated words are the generated words (sentence ends only gain a
    period), so the words before the evidence are its first ``evidence_word`` words; SentencePiece
    pieces never cross whitespace, so their tokens are a prefix of the document's tokens.
    """
    before = " ".join(row["text"].split()[: row["evidence_word"]])
    return 1 + len(tokenizer(before, add_special_tokens=False)["input_ids"])


def evidence_cut_by_truncation(tokenizer: Any, rows: list[dict], max_length: int) -> list[bool]:
    """Per row: does truncation to ``max_length`` (with [CLS] and [SEP]) cut away all of the evidence?"""
    last_kept = max_length - 2  # index of the last text token kept
    return [evidence_token_start(tokenizer, row) > last_kept for row in rows]
