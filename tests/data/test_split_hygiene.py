"""Test documents that also occur in train or validation: counted, warned of, or dropped from training."""

from __future__ import annotations

import logging

import pandas as pd

from bigbird_ft.data.sources import FilesDataModule


def write(path, texts, labels, ids=None):
    frame = pd.DataFrame({"text": texts, "label": labels, **({"id": ids} if ids else {})})
    frame.to_csv(path, index=False)
    return str(path)


def test_overlap_by_text_or_id_is_warned_and_dropped_on_request(tmp_path, caplog):
    train = write(tmp_path / "train.csv", ["alpha  beta", "gamma", "delta", "epsilon", "zeta", "eta"] * 4,
                  ["x", "y"] * 12, ids=[f"t{i}" for i in range(24)])
    test = write(tmp_path / "test.csv", ["alpha beta", "other words", "new text"], ["x", "y", "x"], ids=["q1", "t5", "q3"])
    dm = FilesDataModule(train_file=train, test_file=test)
    with caplog.at_level(logging.WARNING):
        dm.prepare_raw()
    # "alpha beta" matches four training rows by text (whitespace collapsed), "t5" one by id
    assert dm.test_overlap == 2 and "2 of 3 test documents also occur" in caplog.text
    kept = FilesDataModule(train_file=train, test_file=test, drop_test_duplicates=True)
    kept.prepare_raw()
    assert kept.test_overlap == 0
    assert len(kept.raw["train"]) + len(kept.raw["validation"]) == 24 - 5
    texts = set(kept.raw["train"]["text"]) | set(kept.raw["validation"]["text"])
    assert "alpha  beta" not in texts


def test_no_test_split_no_check(tmp_path):
    dm = FilesDataModule(train_file=write(tmp_path / "train.csv", ["a b", "c d"] * 6, ["x", "y"] * 6))
    dm.prepare_raw()
    assert dm.test_overlap == 0
