"""Truncate vs chunk on the long-range task, split by where the evidence lies.

    PYTHONPATH=src python bench/long_docs.py [--max-length 512] [--stride 64] [--out FILE] [-- TRAIN_OVERRIDES...]

Trains the default experiment (``experiment=longrange``) at ``data.max_length=<max-length>``, then
runs ``predict.py`` over its generated test split twice: ``long_docs=truncate`` and
``long_docs=chunk``. Accuracy is reported on all documents, on those whose evidence phrase is cut
away by truncation (its first token lies past the last kept one) and on the rest.
Writes bench/results/long_docs.json (or ``--out``).
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

import pandas as pd
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr[-3000:]}")


def test_split_of(run_dir: Path) -> Path:
    """The generated test.jsonl the run was trained next to (same spec key as the datamodule's)."""
    from bigbird_ft.data.sources import SyntheticDataModule

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # what train.py sets; paths.* resolve from it
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data = SyntheticDataModule(generated_dir=cfg.data.generated_dir, spec=OmegaConf.to_container(cfg.data.spec))
    return data.generated_dir / f"synthetic-{data.spec.key()}" / "test.jsonl"


def accuracy(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=64, help="chunk_stride of predict.py")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "long_docs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "long_docs.json")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()

    from bigbird_ft.data.synthetic import evidence_cut_by_truncation
    from bigbird_ft.models.classifier import BigBirdClassifier

    run_dir = args.workdir / "run"
    started = time.perf_counter()
    run("train.py", [f"data.max_length={args.max_length}", "export=false", "callbacks.rich_progress_bar=null",
                     f"hydra.run.dir={run_dir}", *args.overrides])
    train_s = time.perf_counter() - started
    test_file = test_split_of(run_dir)
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    ckpt = next(p for p in sorted((run_dir / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")
    tokenizer = BigBirdClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).tokenizer
    cut = evidence_cut_by_truncation(tokenizer, rows, args.max_length)

    results: dict[str, dict] = {}
    for mode in ("truncate", "chunk"):
        output = args.workdir / f"preds_{mode}.csv"
        run("predict.py", [f"run_dir={run_dir}", f"input={test_file}", f"output={output}", f"long_docs={mode}",
                           f"chunk_stride={args.stride}", f"hydra.run.dir={args.workdir / ('predict_' + mode)}"])
        labels = pd.read_csv(output)["label"].astype(str).tolist()
        hits = [pred == row["label"] for pred, row in zip(labels, rows, strict=True)]
        results[mode] = {
            "all": accuracy(hits),
            "evidence_cut": accuracy([h for h, c in zip(hits, cut, strict=True) if c]),
            "evidence_kept": accuracy([h for h, c in zip(hits, cut, strict=True) if not c]),
        }
    report = {
        "command": " ".join(["python bench/long_docs.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "max_length": args.max_length,
        "chunk_stride": args.stride,
        "documents": len(rows),
        "evidence_cut_documents": sum(cut),
        "train_and_test_s": round(train_s, 1),
        "accuracy": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(rows)} test documents, evidence cut by truncation to {args.max_length}: {sum(cut)}")
    print("| long_docs | all | evidence cut | evidence kept |\n|---|---|---|---|")
    for mode, acc in results.items():
        print(f"| {mode} | {acc['all']} | {acc['evidence_cut']} | {acc['evidence_kept']} |")


if __name__ == "__main__":
    main()
