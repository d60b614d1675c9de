"""Same seed on CPU -> identical metrics.json (issue 8), each run from empty caches, so data
generation, tokenizer training and tokenization are re-run and their non-determinism would show."""

import json

import pytest

from tests.conftest import run_script, tiny_overrides


@pytest.mark.parametrize("attention", ["block_sparse", "hf_block_sparse"])
def test_same_seed_gives_identical_metrics(tmp_path, attention):
    metrics = []
    for name in ("first", "second"):
        folder = tmp_path / name
        result = run_script("train.py", tiny_overrides(folder, **{
            "trainer.max_epochs": 2, "attention": attention, "export": "false",
            "paths.generated_dir": folder / "generated", "paths.cache_dir": folder / "cache"}))
        assert result.returncode == 0, result.stderr[-3000:]
        metrics.append(json.loads((folder / "run" / "metrics.json").read_text()))
    assert metrics[0] == metrics[1]
    for name in ("first", "second"):  # nothing came from a shared cache
        assert (tmp_path / name / "cache").is_dir() and (tmp_path / name / "generated").is_dir()
    assert {"val/acc", "val/loss", "test/acc", "test/loss"} <= set(metrics[0])
