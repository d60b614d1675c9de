"""A new user's first run on their own CSV: the README's quick start, measured as the acceptance runs it.

Every row is one ``train.py data=files ...`` process on the same CSV files, one epoch capped at 120
batches of 8 (``trainer.max_epochs=1 +trainer.limit_train_batches=120``), tested on the test file; TF-IDF +
logistic regression on the same files is the yardstick. Rows:

- ``default``: no model named: what a user gets (``model=minilm_l6``, ``head=mean``, ``optim=auto``);
- ``minilm_l6``: the same, named;
- ``scratch_lr``: ``model=minilm_l6 optim=scratch``: the pretrained encoder with the scratch learning rate
  (what the README's first pretrained command did before optim=auto);
- ``bigbird_tiny``: ``model=bigbird_tiny``: from scratch (the former default for own data);
- ``NAME=OVERRIDES``: any other row, e.g. ``lr1e-4="optim.lr=1e-4"``.

    python bench/debian_descriptions.py   # the 5-class CSV used here (data/generated/debian-descriptions)
    PYTHONPATH=src python bench/own_data.py [--rows default tfidf ...] [--merge] [--seed 42]

Writes bench/results/own_data.json: per row test acc / macro-F1, wall time, the command, the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "generated" / "debian-descriptions"
ROWS = {
    "default": [],
    "minilm_l6": ["model=minilm_l6"],
    "scratch_lr": ["model=minilm_l6", "optim=scratch"],
    "bigbird_tiny": ["model=bigbird_tiny"],
}
BUDGET = ["trainer.max_epochs=1", "+trainer.limit_train_batches=120", "test=true"]


def tfidf(train: Path, test: Path, text: str, label: str) -> dict[str, Any]:
    """Word 1-2-gram TF-IDF (sublinear tf) + logistic regression (C=10), trained on the whole train file."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    started = time.perf_counter()
    fit, held = pd.read_csv(train), pd.read_csv(test)
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    model = LogisticRegression(C=10, max_iter=2000).fit(vectorizer.fit_transform(fit[text]), fit[label].astype(str))
    predicted = model.predict(vectorizer.transform(held[text]))
    truth = held[label].astype(str)
    return {"test/acc": float((predicted == truth).mean()), "test/f1": float(f1_score(truth, predicted, average="macro")),
            "wall_s": round(time.perf_counter() - started, 1), "command": "TF-IDF 1-2-gram + LogisticRegression(C=10)"}


def train_row(overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "train.py", "data=files", f"data.train_file={args.train}",
                   f"data.test_file={args.test}", f"data.text_column={args.text_column}",
                   f"data.label_column={args.label_column}", *overrides, *BUDGET, f"seed={args.seed}"]
        started = time.perf_counter()
        result = subprocess.run([*command, "callbacks.rich_progress_bar=null", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{shlex.join(command)} failed:\n{result.stderr[-3000:]}")
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    shown = [c.replace(str(ROOT) + "/", "") for c in command[1:]]
    return {"command": "python " + shlex.join(shown),
            **{k: metrics[k] for k in ("test/acc", "test/f1", "val/acc", "val/temperature") if k in metrics},
            **({"val/temperature_reason": metrics["val/temperature_reason"]}
               if "val/temperature_reason" in metrics else {}),
            "wall_s": round(wall, 1), "load_average_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DEFAULT_DATA / "train.csv")
    parser.add_argument("--test", type=Path, default=DEFAULT_DATA / "test.csv")
    parser.add_argument("--text-column", default="article_body")
    parser.add_argument("--label-column", default="desk")
    parser.add_argument("--rows", nargs="+", default=["tfidf", "default", "minilm_l6", "scratch_lr", "bigbird_tiny"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--merge", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "own_data.json")
    args = parser.parse_args()
    for path in (args.train, args.test):
        if not path.is_file():
            raise SystemExit(f"{path} not found: run python bench/debian_descriptions.py first")
    payload = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    results = payload.get("results", {})
    for row in args.rows:
        name, _, spec = row.partition("=")
        print(f"row {name} ...", flush=True)
        if name == "tfidf":
            results[name] = tfidf(args.train, args.test, args.text_column, args.label_column)
        else:
            overrides = ROWS[name] if not spec else shlex.split(spec)
            results[name] = {**train_row(overrides, args), "overrides": overrides}
        print(name, {k: v for k, v in results[name].items() if k.startswith(("test/", "wall"))}, flush=True)
        payload.update({
            "what": "one epoch capped at 120 batches of 8 on a 5-class CSV of Debian package descriptions "
                    "(bench/debian_descriptions.py), tested on its test file",
            "data": {"train": str(args.train.relative_to(ROOT)) if args.train.is_relative_to(ROOT) else str(args.train),
                     "test": str(args.test.relative_to(ROOT)) if args.test.is_relative_to(ROOT) else str(args.test)},
            "command": "PYTHONPATH=src python bench/own_data.py " + shlex.join(sys.argv[1:]),
            "results": results,
        })
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
