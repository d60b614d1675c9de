"""Evidence spans measured on the default long-range task, where the deciding phrase is known.

    PYTHONPATH=src python bench/evidence.py [--run-dir DIR] [--k 3] [--limit N] [--methods auto gradient]
        [--out FILE]

Trains the default run (``python train.py``) unless ``--run-dir`` names a trained one, then runs
``predict.py evidence=K`` on the generated test split and reports:
- ``top1_hit_rate``: over correctly classified test documents, how often the top-1 span overlaps
  the evidence phrase the generator placed (``synthetic.evidence_char_span``). Goal >= 0.9.
- comprehensiveness (ERASER): the drop of the predicted label's probability when the top-K spans
  are deleted, against deleting K random spans of the same lengths (seeded), each through
  predict.py on the edited texts. Goal: top-K drop > random drop.
Writes bench/results/evidence.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_run import train  # noqa: E402  (one fresh-process train.py runner for every bench)

from bigbird_ft.data.synthetic import SyntheticSpec, evidence_char_span, generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 0


def predict(run_dir: Path, rows: list[dict], work: Path, name: str, *extra: str) -> list[dict]:
    source, out = work / f"{name}.jsonl", work / f"{name}-pred.jsonl"
    source.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    command = [sys.executable, "predict.py", f"run_dir={run_dir}", f"input={source}", f"output={out}",
               f"hydra.run.dir={work / ('hydra-' + name)}", *extra]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"predict.py failed:\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def delete(text: str, spans: list[tuple[int, int]]) -> str:
    """The text without the spans (a space where each was, so no two words merge)."""
    pieces, cursor = [], 0
    for start, end in sorted(spans):
        pieces.append(text[cursor:start])
        cursor = end
    pieces.append(text[cursor:])
    return " ".join(p.strip() for p in pieces if p.strip())


def random_spans(text: str, lengths: list[int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping spans of the given lengths at random positions."""
    chosen: list[tuple[int, int]] = []
    for length in lengths:
        for _ in range(1000):
            start = int(rng.integers(0, max(len(text) - length, 1)))
            if all(start + length <= a or start >= b for a, b in chosen):
                chosen.append((start, start + length))
                break
    return chosen


def evaluate(run_dir: Path, rows: list[dict], work: Path, k: int, method: str, spec: SyntheticSpec) -> dict:
    """Top-1 hit rate and comprehensiveness of one evidence method."""
    started = time.perf_counter()
    explained = predict(run_dir, rows, work, f"evidence-{method}", f"evidence={k}", f"evidence_method={method}")
    evidence_s = time.perf_counter() - started
    correct = [(row, pred) for row, pred in zip(rows, explained, strict=True) if pred["label"] == row["label"]]
    hits = 0
    for row, pred in correct:
        start, end = evidence_char_span(row, spec.evidence_words)
        top = pred["evidence"][0]
        hits += top["start"] < end and start < top["end"]
    rng = np.random.default_rng(SEED)
    top_k = [{**row, "text": delete(row["text"], [(s["start"], s["end"]) for s in pred["evidence"]])}
             for row, pred in correct]
    randomised = [{**row, "text": delete(row["text"], random_spans(
        row["text"], [s["end"] - s["start"] for s in pred["evidence"]], rng))} for row, pred in correct]
    after_top = predict(run_dir, top_k, work, f"without-top-k-{method}") if correct else []
    after_random = predict(run_dir, randomised, work, f"without-random-{method}") if correct else []
    drops_top, drops_random = [], []
    for (_row, pred), top, rand in zip(correct, after_top, after_random, strict=True):
        key = f"prob_{pred['label']}"
        drops_top.append(pred[key] - top[key])
        drops_random.append(pred[key] - rand[key])
    hit_rate = hits / len(correct) if correct else None
    return {
        "correct": len(correct),
        "top1_hit_rate": None if hit_rate is None else round(hit_rate, 4),
        "comprehensiveness_top_k": mean(drops_top),
        "comprehensiveness_random": mean(drops_random),
        "top_k_beats_random_share": mean([float(a > b) for a, b in zip(drops_top, drops_random, strict=True)]),
        "goals": {"top1_hit_rate >= 0.9": hit_rate is not None and hit_rate >= 0.9,
                  "top-K drop > random drop": bool(correct) and mean(drops_top) > mean(drops_random)},
        "predict_with_evidence_s": round(evidence_s, 1),
    }


def mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a trained default run (else one is trained)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["auto", "gradient"], help="evidence_method values")
    parser.add_argument("--limit", type=int, default=None, help="first N test documents only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "evidence.json")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as scratch:
        work = Path(scratch)
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = work / "run"
            train(run_dir, [])
        spec = SyntheticSpec()  # the default run's data (conf/data/synthetic.yaml)
        rows = [json.loads(line) for line in generate(spec, ROOT / "data" / "generated")["test"].read_text().splitlines()]
        rows = rows[: args.limit] if args.limit else rows
        load_before = os.getloadavg()[0]
        methods = {method: evaluate(run_dir, rows, work, args.k, method, spec) for method in args.methods}
        model_test_acc = (json.loads((run_dir / "metrics.json").read_text()).get("test/acc")
                          if (run_dir / "metrics.json").exists() else None)
    result = {
        "command": "PYTHONPATH=src python bench/evidence.py " + " ".join(sys.argv[1:]),
        "started": started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "model": "the default run (python train.py, head=attention: auto = pooling weights)",
        "model_test_acc": model_test_acc,
        "k": args.k,
        "documents": len(rows),
        "methods": methods,
        "top1_hit_rate": methods[args.methods[0]]["top1_hit_rate"],
        "comprehensiveness_top_k": methods[args.methods[0]]["comprehensiveness_top_k"],
        "comprehensiveness_random": methods[args.methods[0]]["comprehensiveness_random"],
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
