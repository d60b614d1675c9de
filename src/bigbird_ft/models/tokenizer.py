"""Resolve ``model.tokenizer``: a hub name or folder, a SentencePiece file, or ``train``.

``train`` fits a SentencePiece model (``model.tokenizer_model_type``: unigram by default; word for a closed
vocabulary such as a generated corpus) on the training texts with the ``sentencepiece``
package and wraps it as a transformers BigBird tokenizer, with BigBird's special tokens
([CLS], [SEP], <pad>, [MASK], <unk>) so the encoder sees the same layout as the real vocabulary.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from transformers import AutoTokenizer, BigBirdTokenizer, PreTrainedTokenizerBase

from ..errors import UserError
from ..io_utils import atomic_dir
from .pretrained import resolve_pretrained

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def _training_sentences(texts: Iterable[str], max_chars: int = 4000) -> Iterator[str]:
    # SentencePiece skips inputs longer than max_sentence_length: feed it sentences, not documents
    for text in texts:
        for sentence in SENTENCE_SPLIT.split(text):
            sentence = sentence.strip()
            if sentence:
                yield sentence[:max_chars]


MODEL_TYPES = ("unigram", "bpe", "word", "char")


def train_sentencepiece(texts: list[str], vocab_size: int, cache_dir: str | Path, model_type: str = "unigram") -> Path:
    """Train (or reuse) a SentencePiece model; returns the folder holding ``spiece.model``."""
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise UserError(f"model.tokenizer_model_type={model_type!r} is not one of {', '.join(MODEL_TYPES)}; "
                        "fix model.tokenizer_model_type")

    digest = hashlib.sha1()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
    # the unigram key stays as before, so cached unigram tokenizers are reused
    digest.update(f"vocab={vocab_size}".encode() + (b"" if model_type == "unigram" else f",{model_type}".encode()))
    folder = Path(cache_dir) / "tokenizers" / f"spm-{digest.hexdigest()[:16]}"
    if (folder / "spiece.model").exists():
        return folder
    with atomic_dir(folder) as tmp:
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_sentences(texts),
                model_prefix=str(tmp / "spiece"),
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # an upper bound: small corpora get fewer pieces
                model_type=model_type,
                character_coverage=1.0,
                pad_id=0,
                eos_id=1,
                bos_id=2,
                unk_id=3,
                pad_piece="<pad>",
                eos_piece="</s>",
                bos_piece="<s>",
                unk_piece="<unk>",
                user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
                input_sentence_size=300_000,
                shuffle_input_sentence=True,
                max_sentence_length=8192,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as err:
            message = str(err).splitlines()[-1]
            raise UserError(
                f"SentencePiece training failed ({message}); lower model.tokenizer_vocab_size"
            ) from None
    return folder


def _from_spiece_file(path: Path, cache_dir: str | Path) -> PreTrainedTokenizerBase:
    folder = path.parent
    if path.name != "spiece.model":
        # BigBirdTokenizer.from_pretrained looks for the file name spiece.model
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        folder = Path(cache_dir) / "tokenizers" / f"file-{digest}"
        if not (folder / "spiece.model").exists():
            with atomic_dir(folder) as tmp:
                shutil.copy(path, tmp / "spiece.model")
    # BigBirdTokenizer(vocab_file=...) silently yields a 7-token vocabulary in transformers 5.x;
    # from_pretrained on the folder converts the real one.
    return BigBirdTokenizer.from_pretrained(str(folder))


def resolve_tokenizer(
    spec: str,
    train_texts: list[str] | Callable[[], list[str]] | None = None,
    vocab_size: int = 8000,
    cache_dir: str | Path = "data/cache",
    trust_remote_code: bool = False,
    model_type: str = "unigram",
) -> PreTrainedTokenizerBase:
    """``model.tokenizer`` -> a tokenizer; ``train_texts`` (or a function giving them, called only
    for ``train``) are what a SentencePiece model is fitted on."""
    if spec == "train":
        train_texts = train_texts() if callable(train_texts) else train_texts
        if not train_texts:
            raise UserError("model.tokenizer=train needs training texts, but the training split is empty")
        tokenizer = BigBirdTokenizer.from_pretrained(str(train_sentencepiece(train_texts, vocab_size, cache_dir,
                                                                                  model_type)))
    else:
        spec = resolve_pretrained(spec)
        path = Path(spec).expanduser()
        if path.suffix == ".model":
            if not path.is_file():
                raise UserError(f"SentencePiece file not found: {path}; fix model.tokenizer")
            tokenizer = _from_spiece_file(path, cache_dir)
        elif path.is_dir() and (path / "spiece.model").exists() and not (path / "tokenizer.json").exists():
            tokenizer = _from_spiece_file(path / "spiece.model", cache_dir)
        else:
            try:
                tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as err:
                raise UserError(
                    f"cannot load tokenizer '{spec}' ({str(err).splitlines()[0]}); set model.tokenizer to a "
                    "local folder, a spiece.model file, a reachable hub name, or 'train'"
                ) from None
    if tokenizer.pad_token_id is None or tokenizer.cls_token_id is None:
        raise UserError(f"tokenizer '{spec}' has no pad or cls token; fix model.tokenizer")
    return tokenizer


# a tokenizer inside a checkpoint, so that load_from_checkpoint needs no other file

def tokenizer_to_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def tokenizer_from_files(files: dict[str, bytes]) -> PreTrainedTokenizerBase:
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        return AutoTokenizer.from_pretrained(tmp)
