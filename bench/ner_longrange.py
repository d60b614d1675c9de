"""Long-range tagging: later mentions typed by a definition thousands of tokens before, 4,096 vs 512.

    PYTHONPATH=src python bench/ner_longrange.py [--lengths 4096 512] [--out FILE] [-- TRAIN_OVERRIDES...]

For each length, trains ``experiment=ner_longrange`` at ``data.max_length=<length>`` (shorter
documents are cut into windows, ``data.chunk_stride`` tokens shared), tags the generated test split
with ``predict.py`` (every word once) and scores the later mentions only: a mention is right when
its predicted tag has the mention's type. ``later_mention_f1`` = F1 of those typed mentions
(precision over the mentions given a type, recall over all later mentions). At 512 tokens a later
mention never shares a window with its definition. Writes bench/results/ner_longrange.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
GOAL = {"4096": ">= 0.9", "512": "<= 0.6"}


def run(script: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr[-3000:]}")


def test_split_of(run_dir: Path) -> Path:
    from bigbird_ft.data.sources import SyntheticNerDataModule

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data = SyntheticNerDataModule(generated_dir=cfg.data.generated_dir, spec=OmegaConf.to_container(cfg.data.spec))
    return data.generated_dir / f"ner-{data.spec.key()}" / "test.jsonl"


def later_mention_scores(rows: list[dict], predicted: list[list[str]]) -> dict[str, float]:
    correct = typed = total = 0
    for row, tags in zip(rows, predicted, strict=True):
        for index in row["later_mentions"]:
            gold, guess = row["ner_tags"][index], tags[index]
            total += 1
            if guess != "O":
                typed += 1
                correct += guess.split("-", 1)[-1] == gold.split("-", 1)[-1]
    precision = correct / typed if typed else 0.0
    recall = correct / total if total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"later_mention_f1": round(f1, 4), "later_mention_precision": round(precision, 4),
            "later_mention_recall": round(recall, 4), "later_mentions": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 512])
    parser.add_argument("--stride", type=int, default=128, help="chunk_stride of training windows and predict")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "ner_longrange")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ner_longrange.json")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = {}
    for length in args.lengths:
        run_dir = args.workdir / f"run-{length}"
        started = time.perf_counter()
        run("train.py", ["experiment=ner_longrange", f"data.max_length={length}", f"data.chunk_stride={args.stride}",
                         "callbacks.rich_progress_bar=null", f"hydra.run.dir={run_dir}", *args.overrides])
        train_s = time.perf_counter() - started
        test_file = test_split_of(run_dir)
        rows = [json.loads(line) for line in test_file.read_text().splitlines()]
        output = args.workdir / f"tags-{length}.jsonl"
        run("predict.py", [f"run_dir={run_dir}", f"input={test_file}", f"output={output}",
                           f"chunk_stride={args.stride}", f"hydra.run.dir={args.workdir / f'predict-{length}'}"])
        predicted = [json.loads(line)["tags"] for line in output.read_text().splitlines()]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results[str(length)] = {
            **later_mention_scores(rows, predicted),
            "test/f1": metrics.get("test/f1"), "test/acc": metrics.get("test/acc"), "val/f1": metrics.get("val/f1"),
            "train_wall_s": round(train_s, 1), "test_documents": len(rows),
        }
        print(length, json.dumps(results[str(length)]), flush=True)
    report = {
        "command": " ".join(["PYTHONPATH=src python bench/ner_longrange.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "goal": {"later_mention_f1": GOAL},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
