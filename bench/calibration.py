"""Temperature scaling measured: test ECE and Brier before and after, accuracy unchanged.

    PYTHONPATH=src python bench/calibration.py [-- TRAIN_OVERRIDES...] [--runs default hyperpartisan] [--out FILE]

Each run is ``python train.py ...`` in a fresh process with ``calibrate=true`` (the default); the
uncalibrated figures are the same model's before its temperature (``*_uncalibrated`` in
metrics.json), so before/after is one model, one test set. ``default`` is ``make train``;
``hyperpartisan`` the warm-started MiniLM at 512 tokens (the ~9-minute Hyperpartisan model of
bench/results/quality_single_seed_2026-11.json). Goal: test ECE after <= 0.5 x before. Writes bench/results/calibration.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_run import main_over_runs, train  # noqa: E402  (one fresh-process train.py runner for every bench)

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "default": [],
    "hyperpartisan": ["experiment=hyperpartisan_minilm", "data.max_length=512"],
}
GOAL_RATIO = 0.5


def measure(name: str, scratch: Path, extra: list[str]) -> dict:
    run = train(scratch / name, [*RUNS[name], *extra])
    metrics = json.loads((scratch / name / "metrics.json").read_text())
    before, after = metrics["test/ece_uncalibrated"], metrics["test/ece"]
    return {
        "command": run["command"],
        "temperature": metrics["val/temperature"],
        "test_acc": metrics["test/acc"],
        "test_ece_uncalibrated": before,
        "test_ece": after,
        "test_ece_ratio": round(after / before, 4) if before > 0 else None,
        "test_brier_uncalibrated": metrics["test/brier_uncalibrated"],
        "test_brier": metrics["test/brier"],
        "val_ece_uncalibrated": metrics["val/ece_uncalibrated"],
        "val_ece": metrics["val/ece"],
        "goal_met": before > 0 and after <= GOAL_RATIO * before,
        "wall_s": run["wall_s"],
        "load_avg_1min": run["load_avg_1min"],
    }


def main() -> None:
    rows = main_over_runs("calibration", RUNS, measure, f"test ECE after <= {GOAL_RATIO} x before, accuracy unchanged (argmax is invariant to T)")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
