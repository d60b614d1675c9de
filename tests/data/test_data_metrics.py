"""Training logs the padding efficiency of each batch and the real-token throughput."""

from __future__ import annotations

import csv

import lightning as L
import torch


def test_training_step_logs_pad_efficiency(make_classifier, monkeypatch):
    module = make_classifier(num_labels=2)
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.__setitem__(name, float(torch.as_tensor(value).detach())))
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[0, 48:] = 0
    batch = {"input_ids": torch.randint(5, 50, (2, 64)) * mask, "attention_mask": mask,
             "labels": torch.tensor([0, 1])}
    module.training_step(batch, 0)
    assert logged["train/pad_efficiency"] == 112 / 128


def test_fit_logs_real_tokens_per_second(make_classifier, tmp_path):
    """The module brings Lightning's ThroughputMonitor, counting unpadded tokens as its items."""
    from bigbird_ft.training.callbacks import THROUGHPUT_WINDOW

    module = make_classifier(attention="hf_full", num_labels=2)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[0, 32:] = 0
    batch = {"input_ids": torch.randint(5, 50, (2, 64)) * mask, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    loader = torch.utils.data.DataLoader([batch] * (THROUGHPUT_WINDOW + 2), batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    rates = [float(r["train/device/items_per_sec"]) for r in rows if r.get("train/device/items_per_sec")]
    samples = [float(r["train/device/samples_per_sec"]) for r in rows if r.get("train/device/samples_per_sec")]
    assert rates and all(rate > 0 for rate in rates)
    # 96 real tokens a batch of 2 documents: items (tokens) per second = 48 x samples per second
    assert rates[-1] == __import__("pytest").approx(48 * samples[-1], rel=1e-6)
    assert max(float(r["train/pad_efficiency"]) for r in rows if r.get("train/pad_efficiency")) == 96 / 128
