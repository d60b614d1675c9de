"""estimate=true: the epoch's real batches, measured steps, a predicted run; nothing trained."""

from __future__ import annotations

import json

import pytest

from bigbird_ft.training.estimate import eval_batches, linear_in_tokens, padded_shapes, pick
from tests.conftest import run_script, tiny_overrides


def test_padded_shapes_round_each_batch_up_to_the_block_multiple():
    lengths = [10, 17, 33, 16, 5]
    assert padded_shapes([[0, 1], [2], [3, 4]], lengths, 16) == [(2, 32), (1, 48), (2, 16)]
    assert eval_batches(5, 2) == [[0, 1], [2, 3], [4]]


def test_step_time_is_a_line_through_the_two_measured_shapes():
    line = linear_in_tokens([(4096, 2.0), (1024, 0.8)])
    assert line(1024) == pytest.approx(0.8) and line(4096) == pytest.approx(2.0)
    assert line(2560) == pytest.approx(1.4)
    assert linear_in_tokens([(100, 1.0), (100, 1.0)])(50) == pytest.approx(0.5)


def test_pick_takes_the_longest_and_the_median_batch():
    # a batch of windowed documents is priced as its groups: (6, 512) + (8, 96) > (8, 256)
    shapes = [[(8, 64)], [(6, 512), (8, 96)], [(4, 96)], [(8, 256)], [(2, 16)]]
    batches = [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert pick(shapes, batches) == {"longest": ["b"], "median": ["a"]}


def test_estimate_true_measures_and_predicts_without_training(tmp_path):
    result = run_script("train.py", tiny_overrides(tmp_path, estimate="true", **{"trainer.max_epochs": 3}))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    report = json.loads((run / "estimate.json").read_text())
    # 48 training documents in batches of 8, at most 512 tokens, padded to multiples of 16
    assert report["documents_per_epoch"] == 48 and report["batches_per_epoch"] == 6 and report["epochs"] == 3
    assert 48 * 60 < report["real_tokens_per_epoch"] <= report["padded_tokens_per_epoch"] <= 48 * 512
    assert report["padding_efficiency"] == pytest.approx(
        report["real_tokens_per_epoch"] / report["padded_tokens_per_epoch"], abs=1e-4)
    cpu = report["devices"]["cpu"]
    longest, median = cpu["measured"]["longest"], cpu["measured"]["median"]
    assert longest["padded_length"] % 16 == 0 and median["padded_length"] <= longest["padded_length"] <= 512
    assert longest["train_step_s"] > longest["eval_forward_s"] > 0
    assert cpu["predicted_run_s"] == report["predicted_run_s"] >= report["startup_s"] + 3 * cpu["epoch_train_s"]
    assert cpu["peak_memory_mib"] > 100
    assert "Estimate (reader=sparse): 48 documents (48 model inputs), 6 batches" in result.stdout + result.stderr
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()
