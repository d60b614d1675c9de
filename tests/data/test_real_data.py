"""The published datasets in ../shared/data (skipped when absent, a failure in CI)."""

from collections import Counter

from bigbird_ft.data.sources import HyperpartisanDataModule, PepsDataModule
from tests.conftest import shared_path


def test_hyperpartisan_counts_and_labels(tmp_path):
    folder = shared_path("data/hyperpartisan")
    dm = HyperpartisanDataModule(dir=str(folder), cache_dir=str(tmp_path))
    raw = dm.load_splits()
    assert len(raw["train"]) == 645 and len(raw["test"]) == 628
    assert Counter(raw["train"]["label"]) == {"false": 407, "true": 238}
    assert Counter(raw["test"]["label"]) == {"false": 314, "true": 314}
    first = raw["train"][0]["text"]
    assert first.startswith("Kucinich: Reclaiming the money power") and "<p>" not in first
    dm.prepare_raw()
    assert dm.label_names == ["false", "true"]
    assert len(dm.raw["train"]) + len(dm.raw["validation"]) == 645


def test_peps_counts_by_type(tmp_path):
    folder = shared_path("data/peps")
    dm = PepsDataModule(dir=str(folder), cache_dir=str(tmp_path), text_column=["title", "text"],
                        label_column="type")
    raw = dm.load_splits()
    total = Counter(raw["train"]["type"]) + Counter(raw["test"]["type"])
    assert total == {"Standards Track": 553, "Informational": 94, "Process": 47}
    dm.prepare_raw()
    assert dm.label_names == ["Informational", "Process", "Standards Track"]
    assert sum(len(ds) for ds in dm.raw.values()) == 694
