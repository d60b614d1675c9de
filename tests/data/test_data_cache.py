"""The token cache: a second identical setup reads token ids from disk and never calls the tokenizer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bigbird_ft.data.datamodule import DocumentDataModule
from bigbird_ft.data.sources import (
    FilesDataModule,
    HyperpartisanDataModule,
    PepsDataModule,
    SyntheticDataModule,
)
from bigbird_ft.models.tokenizer import resolve_tokenizer
from tests.conftest import shared_path


def _tokenized_twice(make, tokenizer, monkeypatch) -> tuple[DocumentDataModule, DocumentDataModule]:
    first = make()
    first.prepare_raw()
    first.connect(tokenizer, block_size=16, max_positions=4096)
    first.setup()
    calls = []
    original = type(tokenizer).__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", counting)
    second = make()
    second.prepare_raw()
    second.connect(tokenizer, block_size=16, max_positions=4096)
    second.setup()
    assert calls == [], "the second setup tokenized again instead of reading the cache"
    for split, ds in first.tokenized.items():
        assert ds.cache_files, f"{split}: token ids are in memory only, so nothing is cached"
        assert second.tokenized[split].cache_files == ds.cache_files
        assert second.tokenized[split]["input_ids"][:3] == ds["input_ids"][:3]
    return first, second


def _rows(tmp_path: Path, n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({
        "text": [f"document {i} " + "word " * (5 + i) for i in range(n)],
        "label": ["a" if i % 2 else "b" for i in range(n)],
    })


def test_synthetic_and_files_hit_the_token_cache(tmp_path, tiny_tokenizer, monkeypatch):
    spec = {"num_train": 30, "num_validation": 8, "num_test": 8, "min_words": 30, "max_words": 80}
    _tokenized_twice(
        lambda: SyntheticDataModule(generated_dir=str(tmp_path / "gen"), spec=spec, cache_dir=str(tmp_path / "c"),
                                    max_length=128),
        tiny_tokenizer, monkeypatch,
    )
    monkeypatch.undo()
    for ext in ("csv", "jsonl", "parquet"):
        path = tmp_path / f"train.{ext}"
        frame = _rows(tmp_path)
        if ext == "csv":
            frame.to_csv(path, index=False)
        elif ext == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
        _tokenized_twice(
            lambda path=path: FilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"), max_length=64),
            tiny_tokenizer, monkeypatch,
        )
        monkeypatch.undo()


def test_other_max_length_or_data_misses_the_cache(tmp_path, tiny_tokenizer):
    path = tmp_path / "train.csv"
    _rows(tmp_path).to_csv(path, index=False)
    files = []
    for max_length, frame in ((64, _rows(tmp_path)), (32, _rows(tmp_path)), (64, _rows(tmp_path, 42))):
        frame.to_csv(path, index=False)
        dm = FilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"), max_length=max_length)
        dm.prepare_raw()
        dm.connect(tiny_tokenizer, block_size=16, max_positions=4096)
        dm.setup()
        files.append(dm.tokenized["train"].cache_files[0]["filename"])
    assert len(set(files)) == 3


@pytest.fixture(scope="module")
def real_tokenizer(tmp_path_factory):
    spiece = shared_path("tokenizers/bigbird-roberta-base/spiece.model")
    return resolve_tokenizer(str(spiece), cache_dir=tmp_path_factory.mktemp("tok"))


def test_hyperpartisan_hits_the_token_cache(tmp_path, real_tokenizer, monkeypatch):
    folder = shared_path("data/hyperpartisan")
    first, _ = _tokenized_twice(
        lambda: HyperpartisanDataModule(dir=str(folder), cache_dir=str(tmp_path), max_length=256),
        real_tokenizer, monkeypatch,
    )
    assert len(first.tokenized["test"]) == 628
    assert max(first.tokenized["train"]["length"]) == 256


def test_peps_hits_the_token_cache(tmp_path, real_tokenizer, monkeypatch):
    folder = shared_path("data/peps")
    _tokenized_twice(
        lambda: PepsDataModule(dir=str(folder), cache_dir=str(tmp_path), max_length=256,
                               text_column=["title", "text"], label_column="type"),
        real_tokenizer, monkeypatch,
    )
