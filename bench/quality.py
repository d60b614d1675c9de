"""Model quality on the real data: a TF-IDF baseline vs our from-scratch models, one table.

    PYTHONPATH=src python bench/quality.py [--datasets hyperpartisan peps]
        [--models tfidf tiny longrange minilm minilm_512] [--merge] [--out FILE] [-- TRAIN_OVERRIDES...]

Datasets (../shared/data): Hyperpartisan with its official test split (628 articles), PEPs with
label ``type`` and the seeded stratified test split of ``data=peps``. Every model sees the same
splits: the TF-IDF baseline reads them through the same datamodule that training uses.

- ``tfidf``: word 1-2-gram TF-IDF (sublinear tf) + logistic regression; C picked on the
  validation split by macro-F1 (scikit-learn, from the ``bench`` extra);
- ``tiny``: ``experiment=<dataset>_tiny`` as shipped (real BigBird vocabulary, random init);
- ``longrange``: the default experiment's recipe as it was when measured: a SentencePiece model
  trained on the corpus, our ``block_sparse`` kernel, head ``max``, no attention dropout,
  max_length 4096, 5 epochs;
- ``minilm``: ``experiment=<dataset>_minilm``: all-MiniLM-L6-v2 warm-started into BigBird, 4,096
  positions, our ``block_sparse`` kernel, max_length 4096;
- ``minilm_512``: the same model and recipe, documents truncated to 512 tokens.

``--merge`` keeps the rows already in ``--out`` and replaces only the ones run now.

Accuracy and macro-F1 on the test split; train time is the wall time of the whole ``train.py``
run (data, tokenizer, fit, validate, test). Writes bench/results/quality.json.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"hyperpartisan": "hyperpartisan_tiny", "peps": "peps_tiny"}
MODELS = ("tfidf", "tiny", "longrange", "minilm", "minilm_512")
LONGRANGE_RECIPE = [
    "model.tokenizer=train", "attention=block_sparse", "head=max", "model.config.attention_probs_dropout_prob=0.0",
    "data.max_length=4096", "model.config.max_position_embeddings=4096", "trainer.max_epochs=5",
]


def raw_splits(dataset: str) -> dict[str, Any]:
    """The train/validation/test splits exactly as ``train.py experiment=<dataset>_tiny`` makes them."""
    import hydra
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={EXPERIMENTS[dataset]}", "paths.output_dir=."])
    datamodule = hydra.utils.instantiate(cfg.data, problem_type=None)
    datamodule.prepare_raw()
    return datamodule.raw


def tfidf_baseline(dataset: str) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    raw = raw_splits(dataset)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000)
    train_x = vectorizer.fit_transform(raw["train"]["text"])
    val_x, test_x = vectorizer.transform(raw["validation"]["text"]), vectorizer.transform(raw["test"]["text"])
    best_c, best_f1, best_model = None, -1.0, None
    for c in (0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=5000).fit(train_x, raw["train"]["label"])
        f1 = f1_score(raw["validation"]["label"], model.predict(val_x), average="macro")
        if f1 > best_f1:
            best_c, best_f1, best_model = c, f1, model
    predicted = best_model.predict(test_x)
    return {
        "test/acc": round(float(accuracy_score(raw["test"]["label"], predicted)), 4),
        "test/f1": round(float(f1_score(raw["test"]["label"], predicted, average="macro")), 4),
        "val/f1": round(best_f1, 4),
        "C": best_c,
        "wall_s": round(time.perf_counter() - started, 1),
        "splits": {split: len(ds) for split, ds in raw.items()},
    }


def trained(dataset: str, model: str, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    run_dir = workdir / f"{dataset}-{model}"
    experiment = f"{dataset}_minilm" if model.startswith("minilm") else EXPERIMENTS[dataset]
    recipe = {"longrange": LONGRANGE_RECIPE, "minilm_512": ["data.max_length=512"]}.get(model, [])
    args = [f"experiment={experiment}", *recipe, "export=false", "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={run_dir}", *overrides]
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        sys.exit(f"train.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test/acc": round(metrics["test/acc"], 4),
        "test/f1": round(metrics["test/f1"], 4),
        "val/f1": round(metrics["val/f1"], 4),
        "wall_s": round(time.perf_counter() - started, 1),
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "measured": time.strftime("%Y-%m-%d"),
        "command": "python train.py " + " ".join(a for a in args if not a.startswith("hydra.run.dir")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["tfidf", "tiny", "longrange"])
    parser.add_argument("--merge", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "quality")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for the trained models (after --)")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    commands: list[str] = []
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        results = previous["results"]
        commands = previous.get("commands", [previous["command"]] if "command" in previous else [])
    for dataset in args.datasets:
        results.setdefault(dataset, {})
        for model in args.models:
            if model == "tfidf":
                results[dataset][model] = tfidf_baseline(dataset)
            else:
                results[dataset][model] = trained(dataset, model, args.workdir, args.overrides)
            row = results[dataset][model]
            print(f"{dataset} {model}: acc {row['test/acc']:.4f} macro-F1 {row['test/f1']:.4f} ({row['wall_s']} s)",
                  flush=True)
    report = {
        "commands": [*commands, " ".join(["PYTHONPATH=src python bench/quality.py", *sys.argv[1:]])],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| dataset | model | test acc | test macro-F1 | wall s |\n|---|---|---|---|---|")
    for dataset, rows in results.items():
        for model, row in rows.items():
            print(f"| {dataset} | {model} | {row['test/acc']:.4f} | {row['test/f1']:.4f} | {row['wall_s']} |")


if __name__ == "__main__":
    main()
