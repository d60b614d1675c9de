"""experiment=hyperpartisan_tiny / peps_tiny / data=hub through the real CLI (shrunk to seconds)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script, shared_path, tiny_overrides

SHRINK = {
    "data.max_length": 256,
    "model.config.max_position_embeddings": 256,
}


def real_data_overrides(tmp_path) -> list[str]:
    return [o for o in tiny_overrides(tmp_path, **SHRINK) if not o.startswith("data.spec")]


@pytest.mark.parametrize(
    ("experiment", "folder", "labels"),
    [
        ("hyperpartisan_tiny", "data/hyperpartisan", ["false", "true"]),
        ("peps_tiny", "data/peps", ["Informational", "Process", "Standards Track"]),
    ],
)
def test_real_data_experiment_fast_dev_run(tmp_path, experiment, folder, labels):
    shared_path(folder)
    shared_path("tokenizers/bigbird-roberta-base/spiece.model")
    result = run_script("train.py", [f"experiment={experiment}", "debug=fdr", *real_data_overrides(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/acc", "val/f1", "test/acc", "test/f1"} <= set(metrics)
    config = json.loads((run / "hf_model" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == labels
    assert config["vocab_size"] == 50358  # the real BigBird vocabulary, not a trained one


def test_hub_dataset_offline_is_one_line_naming_data_name(tmp_path):
    result = run_script(
        "train.py",
        ["data=hub", "data.name=no-such-user/no-such-dataset", *real_data_overrides(tmp_path)],
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "data.name=no-such-user/no-such-dataset" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
