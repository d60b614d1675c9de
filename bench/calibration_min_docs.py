"""How many validation documents a temperature fit needs: a simulation behind MIN_CALIBRATION_DOCUMENTS.

Logits of an over-confident classifier are drawn (5 classes, labels sampled at a true temperature), a
temperature is fitted on N of them with ``calibration.fit_temperature``, and the held-out NLL of the fit is
compared with T = 1 on 20,000 other documents. Per N: how often the fit made the held-out NLL worse, how
often it left TEMPERATURE_RANGE, and the median fitted T.

``PYTHONPATH=src python bench/calibration_min_docs.py`` -> bench/results/calibration_min_docs.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bigbird_ft.training.calibration import MIN_CALIBRATION_DOCUMENTS, TEMPERATURE_RANGE, fit_temperature


def draw(n: int, scale: float, true_t: float, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    logits = scale * torch.randn(n, classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial((logits / true_t).softmax(-1), 1, generator=generator).squeeze(1)
    return logits, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 10, 16, 25, 50, 100, 200, 400])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--scale", type=float, default=5.0, help="logit scale (5.0: held-out accuracy 0.77 with 5 classes)")
    parser.add_argument("--true-t", type=float, default=1.5)
    parser.add_argument("--out", default="bench/results/calibration_min_docs.json")
    args = parser.parse_args()
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    held_logits, held_labels = draw(20_000, args.scale, args.true_t, 5, generator)
    base_nll = float(F.cross_entropy(held_logits, held_labels))
    low, high = TEMPERATURE_RANGE
    rows = {}
    for n in args.sizes:
        worse = out_of_range = 0
        temperatures = []
        for _ in range(args.repeats):
            logits, labels = draw(n, args.scale, args.true_t, 5, generator)
            t = fit_temperature(logits, labels)
            temperatures.append(t)
            if not low < t < high:
                out_of_range += 1
                worse += 1  # an unbounded fit is never kept
            elif float(F.cross_entropy(held_logits / t, held_labels)) > base_nll:
                worse += 1
        temperatures.sort()
        rows[str(n)] = {"held_out_nll_worse_than_t1": worse / args.repeats,
                        "fit_out_of_range": out_of_range / args.repeats,
                        "median_t": round(temperatures[len(temperatures) // 2], 4)}
        print(n, rows[str(n)], flush=True)
    payload = {
        "command": "PYTHONPATH=src python bench/calibration_min_docs.py",
        "setup": {"classes": 5, "logit_scale": args.scale, "true_temperature": args.true_t,
                  "repeats": args.repeats, "held_out_documents": 20_000,
                  "accuracy": float((held_logits.argmax(-1) == held_labels).double().mean())},
        "held_out_nll_at_t1": base_nll,
        "held_out_nll_at_true_t": float(F.cross_entropy(held_logits / args.true_t, held_labels)),
        "min_calibration_documents": MIN_CALIBRATION_DOCUMENTS,
        "results": rows,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
