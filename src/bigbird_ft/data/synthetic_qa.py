"""A generated long-range question answering task: the question names a role, the document's opening
says who holds it, and the answer sits thousands of tokens later.

Each context opens with ``names_per_document`` definitions, ``Varn is the pilot .`` (names and roles
drawn per document, so a name says nothing about its role), then ~2,400-3,400 pseudo-words in which,
past word ``answer_after``, every defined name holds one object: ``Varn holds kelo .``. The question
asks ``what does the pilot hold ?``; the answer is that name's object. A 512-token window that holds
the answer sentences does not hold the opening, so it can only guess among the names' objects
(1 in ``names_per_document``); the whole context answers it. The question and the opening fit in the
first attention block (``experiment=qa_longrange``: block size 64), which every token attends to.

Two spec keys vary the task for probes (bench/results/qa_longrange_exploration.json): ``answer_span``
(``object``, the default, or ``record``: the whole holding sentence, which starts on the holder's name)
and ``opening_definitions`` (define only the asked holder and some others; default all).

Rows: ``{"id", "question", "context", "answers": {"text": [answer], "answer_start": [character]},
"answer_word"}`` (the answer's word index, which bench/qa_longrange.py reports).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .synthetic import _pseudo_words, write_generated

DEFAULT_ROLES = ("pilot", "keeper", "judge", "miner", "baker", "scribe")


@dataclass(frozen=True)
class QaSpec:
    seed: int = 2718
    num_train: int = 1600
    num_validation: int = 100
    num_test: int = 200
    roles: tuple[str, ...] = DEFAULT_ROLES
    names_per_document: int = 4
    name_pool: int = 400
    object_pool: int = 400
    min_words: int = 2400
    max_words: int = 3400
    answer_after: int = 1800    # the holding sentences sit past this word (far beyond 512 tokens)
    noise_vocab_size: int = 3000
    zipf_exponent: float = 1.1
    opening_definitions: int | None = None  # how many holders the opening defines (the asked one always); None: all
    answer_span: str = "object"  # object: "kelo"; record: "Varn holds kelo" (starts on the holder's name)
    task: str = "roles"         # roles: the opening says who is asked; latest: the asked holder's last statement
    mentions: int = 4           # latest: how often the asked holder's holding is stated
    window_words: int = 520     # latest: more words than a 512-token window holds (statements this far apart)
    # latest, training split only: the share of documents in which one other holder's statement sits within
    # window_words / 2 words of the answer (hard negatives: the name, not the position, must decide);
    # validation and test keep every other statement anywhere
    train_near_statement: float = 0.0
    version: int = field(default=1)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class QaCorpus:
    def __init__(self, spec: QaSpec) -> None:
        if not 1 <= spec.names_per_document <= len(spec.roles):
            raise UserError("data.spec.names_per_document must be between 1 and the number of roles (one name per role); "
                            "fix data.spec.names_per_document")
        if spec.answer_after >= spec.min_words:
            raise UserError("data.spec.answer_after must be below data.spec.min_words; fix one of them")
        if spec.opening_definitions is not None and not 1 <= spec.opening_definitions <= spec.names_per_document:
            raise UserError("data.spec.opening_definitions must be between 1 and names_per_document (or null: all); "
                            "fix data.spec.opening_definitions")
        if spec.answer_span not in ("record", "object"):
            raise UserError(f"data.spec.answer_span must be record or object, not {spec.answer_span!r}; "
                            "fix data.spec.answer_span")
        if not 0.0 <= spec.train_near_statement <= 1.0:
            raise UserError(f"data.spec.train_near_statement is a share of documents in [0, 1], not "
                            f"{spec.train_near_statement}; fix data.spec.train_near_statement")
        if spec.task not in ("roles", "latest"):
            raise UserError(f"data.spec.task must be roles or latest, not {spec.task!r}; fix data.spec.task")
        if spec.task == "latest" and (spec.answer_after < (spec.mentions - 1) * spec.window_words
                                      or spec.min_words < spec.answer_after + spec.window_words):
            raise UserError("data.spec.task=latest needs answer_after >= (mentions - 1) * window_words and "
                            "min_words >= answer_after + window_words; fix data.spec.answer_after, "
                            "min_words or window_words")
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        taken: set[str] = set(spec.roles) | {"is", "the", "holds", "what", "does", "hold", "at", "end"}
        self.noise = np.array(_pseudo_words(rng, spec.noise_vocab_size, taken))
        weights = np.arange(1, spec.noise_vocab_size + 1, dtype=np.float64) ** (-spec.zipf_exponent)
        self.noise_probs = weights / weights.sum()
        self.names = [w.capitalize() for w in _pseudo_words(rng, spec.name_pool, taken)]
        self.objects = _pseudo_words(rng, spec.object_pool, taken)

    def example(self, rng: np.random.Generator, train: bool = False) -> dict:
        return self._latest(rng, train) if self.spec.task == "latest" else self._roles(rng)

    def _roles(self, rng: np.random.Generator) -> dict:
        spec = self.spec
        k = spec.names_per_document
        names = [self.names[int(i)] for i in rng.choice(len(self.names), size=k, replace=False)]
        roles = [spec.roles[int(i)] for i in rng.choice(len(spec.roles), size=k, replace=False)]
        objects = [self.objects[int(i)] for i in rng.choice(len(self.objects), size=k, replace=False)]
        asked = int(rng.integers(k))
        defined = [asked, *(i for i in range(k) if i != asked)][:spec.opening_definitions or k]
        words: list[str] = []
        for i in sorted(defined):
            words += [names[i], "is", "the", roles[i], "."]
        n_words = int(rng.integers(spec.min_words, spec.max_words + 1))
        body = [str(w) for w in rng.choice(self.noise, size=n_words, p=self.noise_probs)]
        slots = sorted(rng.choice(np.arange(spec.answer_after, n_words), size=k, replace=False).tolist(), reverse=True)
        holders = rng.permutation(k).tolist()
        for slot, holder in zip(slots, holders, strict=True):  # back to front: earlier slots keep their index
            body[slot:slot] = [names[holder], "holds", objects[holder], "."]
        words += body
        # the asked holding sentence's word index: "<name> holds <object>"
        holder_word = next(i for i in range(len(words) - 2) if words[i] == names[asked] and words[i + 1] == "holds")
        return self._row(f"what does the {roles[asked]} hold ?", words, holder_word)

    def _latest(self, rng: np.random.Generator, train: bool = False) -> dict:
        """The asked holder's holding is stated ``mentions`` times, each statement in its own 512-token window;
        the last one, past ``answer_after`` and a window from the end, is the answer. A window sees one
        statement and cannot tell whether a later one follows; the whole context can."""
        spec = self.spec
        k, m, gap = spec.names_per_document, spec.mentions, spec.window_words
        names = [self.names[int(i)] for i in rng.choice(len(self.names), size=k, replace=False)]
        objects = [self.objects[int(i)] for i in rng.choice(len(self.objects), size=k + m - 1, replace=False)]
        n_words = int(rng.integers(spec.min_words, spec.max_words + 1))
        body = [str(w) for w in rng.choice(self.noise, size=n_words, p=self.noise_probs)]
        last = int(rng.integers(spec.answer_after, n_words - gap + 1))
        # m - 1 earlier statements before answer_after, pairwise and from the last at least `gap` words apart
        earlier = np.sort(rng.integers(0, spec.answer_after - (m - 1) * gap + 1, size=m - 1)) + gap * np.arange(m - 1)
        # the asked holder's earlier objects are objects[k - 1:]; the first of them is also holder k - 1's
        # (an off-by-one kept as it is: bench/results/qa_longrange.json was measured on this corpus)
        statements = [(int(slot), names[0], objects[k - 1 + i]) for i, slot in enumerate(earlier)]
        statements.append((last, names[0], objects[0]))
        # the other holders: one statement each, anywhere
        others = [int(rng.integers(0, n_words)) for _ in range(1, k)]
        # drawn after everything else, so that validation and test are the same documents at any rate
        if train and others and spec.train_near_statement and rng.random() < spec.train_near_statement:
            reach = gap // 2
            others[0] = int(rng.integers(max(0, last - reach), min(n_words, last + reach) + 1))
        statements += [(slot, names[i], objects[i]) for i, slot in enumerate(others, start=1)]
        for slot, name, thing in sorted(statements, key=lambda s: s[0], reverse=True):
            body[slot:slot] = [name, "holds", thing, "."]  # back to front: earlier slots keep their index
        holder_word = max(i for i in range(len(body) - 2) if body[i] == names[0] and body[i + 1] == "holds")
        return self._row(f"what does {names[0]} hold at the end ?", body, holder_word)

    def _row(self, question: str, words: list[str], holder_word: int) -> dict:
        """The answer of "<name> holds <object>" at ``holder_word``: the object, or the record from the name."""
        answer_word = holder_word if self.spec.answer_span == "record" else holder_word + 2
        answer = " ".join(words[answer_word:holder_word + 3])
        start = sum(len(w) + 1 for w in words[:answer_word])
        context = " ".join(words)
        assert context[start:start + len(answer)] == answer
        return {"question": question, "context": context,
                "answers": {"text": [answer], "answer_start": [start]}, "answer_word": answer_word}

    def split(self, name: str, size: int) -> list[dict]:
        rng = np.random.default_rng([self.spec.seed, {"train": 1, "validation": 2, "test": 3}[name]])
        return [{"id": f"{name}-{i:05d}", **self.example(rng, train=name == "train")} for i in range(size)]


def generate_qa(spec: QaSpec, out_dir: str | Path) -> dict[str, Path]:
    """The question answering corpus under ``out_dir/qa-<key>``."""
    return write_generated(out_dir, "qa", spec, lambda name, size: QaCorpus(spec).split(name, size))
