"""Resume after SIGKILL mid-epoch, and eval-only on a checkpoint."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from tests.conftest import run_script, tiny_overrides

# 48 training docs / batch 8 = 6 steps per epoch; last.ckpt every 2 steps
RESUMABLE = {"trainer.max_epochs": 3, "callbacks": "resumable", "callbacks.periodic_checkpoint.every_n_train_steps": 2}


def progress(ckpt) -> tuple[int, int]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return state["epoch"], state["global_step"]


def final_weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    result = run_script("train.py", tiny_overrides(tmp, **RESUMABLE))
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp / "run"


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(full_run, tmp_path):
    overrides = tiny_overrides(tmp_path, **RESUMABLE)
    killed = run_script("train.py", [*overrides, "+callbacks.kill._target_=tests.scale_helpers.KillAtStep",
                                     "+callbacks.kill.step=9"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = tmp_path / "run"
    assert progress(run / "checkpoints" / "last.ckpt") == (1, 8)  # mid-epoch: step 8 of 6-step epochs
    assert not (run / "metrics.json").exists()

    resumed = run_script("train.py", [*overrides, "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert progress(run / "checkpoints" / "last.ckpt") == progress(full_run / "checkpoints" / "last.ckpt") == (2, 18)
    # the resumed run saw the batches the killed one had not (not the epoch's first ones again) and drew
    # the same dropout masks: it ends with the uninterrupted run's weights and metrics
    resumed_weights = final_weights(run)
    uninterrupted_weights = final_weights(full_run)
    assert resumed_weights.keys() == uninterrupted_weights.keys()
    for name, tensor in resumed_weights.items():
        torch.testing.assert_close(tensor, uninterrupted_weights[name], atol=1e-6, rtol=1e-5, msg=name)
    resumed_metrics = json.loads((run / "metrics.json").read_text())
    uninterrupted_metrics = json.loads((full_run / "metrics.json").read_text())
    for key in ("val/loss", "val/acc", "test/loss", "test/acc"):
        assert resumed_metrics[key] == pytest.approx(uninterrupted_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_eval_only_reproduces_the_test_metrics_of_training(full_run, tmp_path):
    best = [p for p in (full_run / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1
    result = run_script("train.py", [*tiny_overrides(tmp_path), "train=false", "test=true", f"ckpt_path={best[0]}"])
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((full_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/acc", "test/f1", "test/loss", "val/acc"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    assert (tmp_path / "run" / "hf_model" / "config.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_only_without_checkpoint_is_one_line_error(tmp_path):
    result = run_script("train.py", [*tiny_overrides(tmp_path), "train=false"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: train=false evaluates a checkpoint; set ckpt_path=<file.ckpt>"]
