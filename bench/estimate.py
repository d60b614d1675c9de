"""The cost estimate against the run it predicts.

    PYTHONPATH=src python bench/estimate.py [-- TRAIN_OVERRIDES...] [--runs default hyperpartisan_tiny] [--out FILE]

Per run, in fresh processes: ``train.py estimate=true`` once to fill the data caches (as a user's
first estimate would), the real ``train.py`` run timed from outside (its wall time is the measured
run time), then ``estimate=true`` again, whose prediction is compared:
``relative_error = (predicted - measured) / measured``. Goal: |relative_error| <= 0.25.
Run on a quiet machine: the estimate measures steps, so anything sharing the cores skews both.
Writes bench/results/estimate.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_run import main_over_runs, train  # noqa: E402  (one fresh-process train.py runner for every bench)

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"default": [], "hyperpartisan_tiny": ["experiment=hyperpartisan_tiny"]}
GOAL = 0.25


def estimate(run_dir: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "estimate=true", *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        sys.exit(f"estimate failed:\n{result.stderr[-3000:]}")
    report = json.loads((run_dir / "estimate.json").read_text())
    report["estimate_wall_s"] = round(time.perf_counter() - started, 1)
    return report


def measure(name: str, scratch: Path, extra: list[str]) -> dict:
    overrides = [*RUNS[name], *extra]
    estimate(scratch / f"{name}-warm", overrides)
    run = train(scratch / f"{name}-run", overrides)
    predicted = estimate(scratch / f"{name}-estimate", overrides)
    error = (predicted["predicted_run_s"] - run["wall_s"]) / run["wall_s"]
    return {
        "command": "python train.py estimate=true " + " ".join(overrides),
        "predicted_run_s": predicted["predicted_run_s"],
        "measured_run_s": run["wall_s"],
        "relative_error": round(error, 4),
        "goal_met": abs(error) <= GOAL,
        "estimate": predicted,
        "run_test_acc": run.get("test_acc"),
        "load_avg_1min": run["load_avg_1min"],
    }


def main() -> None:
    rows = main_over_runs("estimate", RUNS, measure, f"|predicted - measured| / measured <= {GOAL}")
    print(json.dumps({k: {x: v[x] for x in ("predicted_run_s", "measured_run_s", "relative_error")}
                      for k, v in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
