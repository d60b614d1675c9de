"""README features that no other test runs, each at fdr/limit size: the cosine schedule with
gradient accumulation, logger=many, debug=profiler, debug=overfit, a checkpoint run with another backend, and weights_only refusing a pickled object."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script, tiny_overrides
from tests.models.test_module import TEXTS, encode, save_checkpoint


def lr_rows(run: Path) -> list[float]:
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")))))
    key = "lr-AdamW/head"
    return [float(r[key]) for r in rows if r.get(key)]


def test_cosine_schedule_accumulation_many_loggers_and_profiler(tmp_path):
    """48 documents / batch 8 = 6 batches = 3 optimizer steps of 2 accumulated batches."""
    result = run_script("train.py", tiny_overrides(tmp_path, **{
        "debug": "profiler", "optim.scheduler": "cosine", "optim.warmup_ratio": 0.0, "optim.lr": 0.01,
        "trainer.accumulate_grad_batches": 2, "logger": "many", "test": "false", "export": "false"}),
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    # one LR per optimizer step, on the cosine curve 0.5 * (1 + cos(pi * t / 3)), not linear decay
    lrs = list(dict.fromkeys(lr_rows(run)))
    assert lrs == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * t / 3)) for t in range(3)])
    assert list(run.rglob("events.out.tfevents.*")), "logger=many wrote no TensorBoard events"
    assert list((run / "wandb").glob("offline-run-*")), "logger=many wrote no W&B offline run"
    profile = next(run.glob("*profile*.txt")).read_text()
    assert "run_training_epoch" in profile and "Total" in profile


def test_debug_overfit_learns_its_two_batches(tmp_path):
    result = run_script("train.py", tiny_overrides(tmp_path, **{
        "debug": "overfit", "trainer.max_epochs": 20, "test": "false", "export": "false",
        "optim.lr": 0.01, "optim.scheduler": "constant",
        "model.config.hidden_dropout_prob": 0.0}))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(next((tmp_path / "run").rglob("metrics.csv")))))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    print(losses)
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0], losses


def test_a_checkpoint_runs_with_another_backend(make_classifier, tmp_path):
    """Backends share parameter names: a block_sparse checkpoint loads under hf_block_sparse with the
    same outputs (eval mode, random_blocks=hf reproduces HF's plan), at a block-sparse length."""
    from bigbird_ft.models.classifier import BigBirdClassifier

    module = make_classifier(attention="block_sparse").eval()
    save_checkpoint(module, tmp_path / "m.ckpt")
    other = BigBirdClassifier.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu",
                                                   attention={"name": "hf_block_sparse"}).eval()
    assert other.backend.name == "hf_block_sparse"
    batch = encode(module.tokenizer, [t * 40 for t in TEXTS])
    assert batch["input_ids"].shape[1] > 144  # past (5 + 2r) blocks: HF really runs block-sparse
    with torch.no_grad():
        torch.testing.assert_close(other(batch["input_ids"], batch["attention_mask"]),
                                   module(batch["input_ids"], batch["attention_mask"]), atol=1e-5, rtol=1e-4)


class NotATensor:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""


def test_weights_only_refuses_a_pickled_object(make_classifier, tmp_path):
    from bigbird_ft.errors import UserError
    from bigbird_ft.models.classifier import BigBirdClassifier
    from bigbird_ft.models.factory import load_classifier

    save_checkpoint(make_classifier(), tmp_path / "m.ckpt")
    checkpoint = torch.load(tmp_path / "m.ckpt", map_location="cpu", weights_only=True)
    checkpoint["extra"] = NotATensor()
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match=r"holds a pickled Python object \(tests.data.test_features.NotATensor\).*ckpt_path"):
        load_classifier(tmp_path / "evil.ckpt")
    assert isinstance(load_classifier(tmp_path / "m.ckpt"), BigBirdClassifier)
