"""model.tokenizer choices: train (cached), a saved tokenizer folder, a spiece.model file, a hub name."""

from __future__ import annotations

import pytest

from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec
from bigbird_ft.errors import UserError
from bigbird_ft.models.tokenizer import resolve_tokenizer
from tests.conftest import shared_path


def test_train_twice_on_the_same_texts_reuses_the_cached_model(tmp_path, monkeypatch):
    import sentencepiece as spm

    texts = [r["text"] for r in SyntheticCorpus(SyntheticSpec(min_words=40, max_words=120)).split("train", 20)]
    first = resolve_tokenizer("train", texts, vocab_size=300, cache_dir=tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("SentencePiece trained again on the same texts")

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", no_training)
    second = resolve_tokenizer("train", texts, vocab_size=300, cache_dir=tmp_path)
    assert second.get_vocab() == first.get_vocab()
    assert second(texts[0])["input_ids"] == first(texts[0])["input_ids"]
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1


def test_word_model_type_keeps_every_training_word_whole_and_a_bad_type_names_the_key(tmp_path):
    texts = [r["text"] for r in SyntheticCorpus(SyntheticSpec(min_words=40, max_words=120)).split("train", 20)]
    words = {w for text in texts for w in text.split()}
    word_tok = resolve_tokenizer("train", texts, vocab_size=2000, cache_dir=tmp_path, model_type="word")
    assert all(len(word_tok.tokenize(w)) == 1 for w in words)
    def pieces_inside_words(tok):
        return [p for p in tok.get_vocab() if not p.startswith(("\u2581", "<", "["))]
    assert pieces_inside_words(word_tok) == []
    unigram = resolve_tokenizer("train", texts, vocab_size=2000, cache_dir=tmp_path)
    assert pieces_inside_words(unigram)  # the default model type has pieces inside words: the key changes something
    assert len(list((tmp_path / "tokenizers").iterdir())) == 2  # cached apart
    with pytest.raises(UserError, match="model.tokenizer_model_type"):
        resolve_tokenizer("train", texts, vocab_size=300, cache_dir=tmp_path, model_type="words")


def test_saved_tokenizer_folder_loads_the_same_tokenizer(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    loaded = resolve_tokenizer(str(tmp_path / "tok"), cache_dir=tmp_path)
    text = "movx kifagomx rorx and more words"
    assert loaded.is_fast and loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_real_spiece_file_gives_a_fast_bigbird_tokenizer(tmp_path):
    spiece = shared_path("tokenizers/bigbird-roberta-base/spiece.model")
    renamed = tmp_path / "bigbird.model"
    renamed.write_bytes(spiece.read_bytes())  # any file name, not only spiece.model
    tok = resolve_tokenizer(str(renamed), cache_dir=tmp_path)
    assert tok.is_fast and type(tok).__name__ == "BigBirdTokenizer" and len(tok) == 50358
    ids = tok("Python Enhancement Proposals describe new features.")["input_ids"]
    assert ids[0] == tok.cls_token_id == 65 and ids[-1] == tok.sep_token_id == 66 and 100 not in ids


def test_unreachable_hub_name_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="model.tokenizer") as info:
        resolve_tokenizer("no-such-user/no-such-tokenizer", cache_dir=tmp_path)
    assert "\n" not in str(info.value)
