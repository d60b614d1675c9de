"""data=hub goes through datasets.load_dataset; a local dataset folder stands in for the hub (offline)."""

from __future__ import annotations

import datasets

from bigbird_ft.data.sources import HubDataModule


def test_local_dataset_folder_with_class_labels(tmp_path):
    features = datasets.Features({"body": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    folder = tmp_path / "my_dataset" / "data"
    folder.mkdir(parents=True)
    for split, n in (("train", 30), ("test", 10)):
        rows = {"body": [f"{split} text {i} " + "w " * i for i in range(n)], "label": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}-00000.parquet"))
    dm = HubDataModule(name=str(tmp_path / "my_dataset"), text_column="body", cache_dir=str(tmp_path / "c"))
    dm.prepare_raw()
    assert dm.label_names == ["neg", "pos"]  # ClassLabel ints became their names
    assert set(dm.raw) == {"train", "validation", "test"}
    assert len(dm.raw["train"]) + len(dm.raw["validation"]) == 30 and len(dm.raw["test"]) == 10
    assert dm.raw["test"][1]["label"] == "pos"
