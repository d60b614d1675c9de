"""Temperature scaling: the fit, the metrics against independent formulas, a run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bigbird_ft.errors import UserError
from bigbird_ft.training.calibration import brier_score, calibration_metrics, fit_temperature
from bigbird_ft.training.checks import check_calibrate
from tests.conftest import run_script, tiny_overrides
from tests.training.test_configs import compose_train


def test_fit_recovers_the_temperature_the_labels_were_drawn_with():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20_000, 4, generator=generator)
    labels = torch.multinomial((logits / 2.5).softmax(-1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    # already calibrated logits keep T = 1
    labels = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def numpy_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence, predicted = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            total += members.mean() * abs((predicted[members] == labels[members]).mean() - confidence[members].mean())
    return total


def test_ece_and_brier_match_independent_formulas():
    generator = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(500, 3, generator=generator)
    labels = torch.randint(0, 3, (500,), generator=generator)
    values = calibration_metrics(logits, labels, temperature=1.7)
    for suffix, temperature in (("", 1.7), ("_uncalibrated", 1.0)):
        probs = (logits / temperature).softmax(-1).numpy().astype(np.float64)
        onehot = np.eye(3)[labels.numpy()]
        assert values[f"brier{suffix}"] == pytest.approx(((probs - onehot) ** 2).sum(1).mean(), abs=1e-6)
        assert values[f"ece{suffix}"] == pytest.approx(numpy_ece(probs, labels.numpy()), abs=1e-5)
    assert brier_score(torch.eye(3), torch.arange(3)) == 0


def test_model_divides_its_logits_by_the_temperature(make_classifier):
    module = make_classifier().eval()
    ids = torch.randint(5, 300, (2, 64))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        raw = module(ids, mask)
        module.model.temperature.fill_(2.0)
        torch.testing.assert_close(module(ids, mask), raw / 2.0)


def test_a_run_fits_stores_and_reports_the_temperature(tmp_path):
    # 64 validation documents: above the 50 a fit needs
    result = run_script("train.py", tiny_overrides(tmp_path, **{"trainer.max_epochs": 2,
                                                               "data.spec.num_validation": 64}))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    temperature = metrics["val/temperature"]
    assert metrics["val/temperature_reason"] == "fitted"
    assert temperature != pytest.approx(1.0, abs=1e-3)
    # the fit minimises validation NLL: its ECE/Brier there are no worse than before (Brier is a proper score)
    assert metrics["val/brier"] <= metrics["val/brier_uncalibrated"] + 1e-6
    for key in ("test/ece", "test/ece_uncalibrated", "test/brier", "test/brier_uncalibrated"):
        assert 0 <= metrics[key] <= 2, key
    best = next(p for p in (run / "checkpoints").glob("epoch_*.ckpt"))
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert float(state["model.temperature"]) == pytest.approx(temperature, rel=1e-5)
    assert (run / "reliability.png").stat().st_size > 1000


def test_calibrate_false_keeps_the_raw_outputs(tmp_path):
    result = run_script("train.py", tiny_overrides(tmp_path, calibrate="false", test="false", export="false"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/temperature"] == 1.0
    assert metrics["val/ece"] == pytest.approx(metrics["val/ece_uncalibrated"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["calibrate=maybe"], "calibrate=maybe is not true or false: fix calibrate"),
    (["+trainer.limit_val_batches=0"], "calibrate=true fits a temperature on the validation split, which "
                                      "trainer.limit_val_batches=0 turns off: set calibrate=false or drop "
                                      "limit_val_batches"),
])
def test_a_calibration_that_cannot_run_is_one_line(overrides, message):
    with pytest.raises(UserError) as err:
        check_calibrate(compose_train(overrides))
    assert str(err.value) == message


def test_the_cli_exits_with_the_line(tmp_path):
    result = run_script("train.py", [*tiny_overrides(tmp_path), "+trainer.limit_val_batches=0"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: calibrate=true fits a temperature")
    assert not (tmp_path / "run" / "checkpoints").exists()
