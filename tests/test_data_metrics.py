"""training_step logs the padding efficiency and the real-token throughput of each batch."""

from __future__ import annotations

import torch


def test_training_step_logs_pad_efficiency_and_tokens_per_sec(make_classifier, monkeypatch):
    module = make_classifier(num_labels=2)
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda name, value, **kwargs: logged.__setitem__(name, float(torch.as_tensor(value).detach())))
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[0, 48:] = 0
    batch = {"input_ids": torch.randint(5, 50, (2, 64)) * mask, "attention_mask": mask,
             "labels": torch.tensor([0, 1])}
    module.training_step(batch, 0)
    assert logged["train/pad_efficiency"] == 112 / 128
    assert "train/tokens_per_sec" not in logged  # needs the previous batch's start
    module.training_step(batch, 1)
    assert logged["train/tokens_per_sec"] > 0
