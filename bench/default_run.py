"""The default run (`make train`) over several seeds, so its README figure is a distribution, not a draw.

    PYTHONPATH=src python bench/default_run.py [--seeds 42 1 2 3 4] [--short-seeds 42] [--compare-heads max]
        [--out FILE] [-- TRAIN_OVERRIDES...]

Per seed, ``python train.py seed=S`` (the default experiment, max_length 4,096) in a fresh process:
test acc, macro-F1, wall time, epochs run, per-epoch val/acc and the load average. ``--short-seeds``
repeats the default at ``data.max_length=512`` (the evidence is cut away in ~70 % of documents).
``--compare-heads`` trains the same seed with other heads (e.g. the former default ``max``), and
for each head reports at initialisation how often a pooled feature's gradient can reach the
evidence phrase at all. Writes bench/results/default_run.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, overrides: list[str]) -> dict:
    """One train.py run in a fresh process; its metrics, per-epoch val/acc, wall time, load."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    command = [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "callbacks.rich_progress_bar=null",
               *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"train.py {' '.join(overrides)} failed:\n{result.stderr[-3000:]}")
    return {
        "command": "python train.py " + " ".join(overrides),
        **run_metrics(run_dir),
        "wall_s": round(wall, 1),
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }


def run_metrics(run_dir: Path) -> dict:
    """Test metrics, and val/acc per fit epoch from the CSV log.

    Only epochs that trained count: the validation of the best checkpoint after fit logs one more
    val/acc row under the next epoch number, which is not an epoch.
    """
    metrics = json.loads((run_dir / "metrics.json").read_text())
    val_acc: dict[int, float] = {}
    trained: set[int] = set()
    for path in sorted(run_dir.glob("csv/*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss_epoch"):
                trained.add(int(row["epoch"]))
            if row.get("val/acc"):
                val_acc.setdefault(int(row["epoch"]), round(float(row["val/acc"]), 4))
    return {
        "test_acc": round(metrics["test/acc"], 4),
        "test_macro_f1": round(metrics["test/f1"], 4),
        "val_acc_per_epoch": [val_acc[e] for e in sorted(trained) if e in val_acc],
        "epochs": len(trained),
    }


def reparse(out: Path, workdir: Path) -> None:
    """Re-read the per-run metrics of an existing report from its run dirs (wall times are kept)."""
    report = json.loads(out.read_text())
    sections = [key for key in report if key.startswith("max_length_")]
    for key in sections:
        # the first section is the default length, the second the truncated one (written in that order)
        prefix = "seed" if key == sections[0] else "short"
        for row in report[key]["runs"]:
            row.update(run_metrics(workdir / f"{prefix}{row['seed']}"))
    for head, row in report.get("heads_same_seed", {}).items():
        first_seed = report[sections[0]]["runs"][0]["seed"]
        run_dir = workdir / (f"head_{head}" if "command" in row else f"seed{first_seed}")
        row["val_acc_per_epoch"] = run_metrics(run_dir)["val_acc_per_epoch"]
    report["reparsed"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"reparsed {out}")


def evidence_reach_at_init(run_dir: Path, head: str, seed: int, docs: int = 16) -> float:
    """Share of (document, pooled feature) pairs whose gradient reaches an evidence token, at init.

    Mean and attention pooling pass gradient to every token (1.0 by construction); max pooling
    passes it to one token per feature, so this is how often that token is part of the evidence.
    """
    from bigbird_ft.data.synthetic import evidence_token_start
    from bigbird_ft.models.classifier import BigBirdClassifier
    from bigbird_ft.models.factory import build_classifier

    ckpt = next(p for p in sorted((run_dir / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")
    trained = BigBirdClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    tokenizer = trained.tokenizer
    hparams = dict(trained.hparams)
    torch.manual_seed(seed)
    fresh = build_classifier(
        model=hparams["model"], attention=hparams["attention"], head={**hparams["head"], "name": head},
        id2label=hparams["id2label"], encoder_config=hparams["encoder_config"],
        problem_type=hparams["problem_type"], optim=hparams["optim"],
    ).eval()
    from long_docs import test_split_of  # bench/ is sys.path[0] when a bench script runs
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    test_file = test_split_of(run_dir)
    rows = [json.loads(line) for line in test_file.read_text().splitlines()[:docs]]
    max_length = int(cfg.data.max_length)
    reached = total = 0
    for row in rows:
        encoded = tokenizer(row["text"], truncation=True, max_length=max_length, padding=True,
                            pad_to_multiple_of=fresh.backend.block_size, return_tensors="pt")
        real = int(encoded["attention_mask"].sum())
        start = evidence_token_start(tokenizer, row)
        words = row["text"].split()
        evidence_end = row["evidence_word"] + int(cfg.data.spec.evidence_words)
        end = 1 + len(tokenizer(" ".join(words[:evidence_end]), add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            hidden = fresh.backend.encode(fresh.encoder, encoded["input_ids"], encoded["attention_mask"])[0, :real]
        if head == "max":
            argmax = hidden.argmax(0)
            reached += int(((argmax >= start) & (argmax < end)).sum())
        else:
            reached += hidden.shape[1]
        total += hidden.shape[1]
    return round(reached / total, 4)


def summary(rows: list[dict]) -> dict:
    accs = [r["test_acc"] for r in rows]
    return {"mean_test_acc": round(statistics.mean(accs), 4), "min_test_acc": round(min(accs), 4),
            "mean_test_macro_f1": round(statistics.mean(r["test_macro_f1"] for r in rows), 4),
            "max_wall_s": max(r["wall_s"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    parser.add_argument("--short-seeds", type=int, nargs="*", default=[42])
    parser.add_argument("--short-length", type=int, default=512)
    parser.add_argument("--compare-heads", nargs="*", default=["max"])
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "default_run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "default_run.json")
    parser.add_argument("--reparse", action="store_true",
                        help="only re-read the run dirs of an existing --out (after a parser fix)")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()
    if args.reparse:
        reparse(args.out, args.workdir)
        return
    torch.set_num_threads(os.cpu_count() or 1)

    result: dict = {
        "command": "PYTHONPATH=src python " + " ".join(["bench/default_run.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    long_rows = []
    for seed in args.seeds:
        row = train(args.workdir / f"seed{seed}", [f"seed={seed}", *args.overrides])
        long_rows.append({"seed": seed, **row})
        print(json.dumps(long_rows[-1]), flush=True)
    from omegaconf import OmegaConf

    default_length = OmegaConf.load(args.workdir / f"seed{args.seeds[0]}" / ".hydra" / "config.yaml").data.max_length
    result[f"max_length_{default_length}"] = {"runs": long_rows, **summary(long_rows)}
    short_rows = []
    for seed in args.short_seeds:
        row = train(args.workdir / f"short{seed}",
                    [f"seed={seed}", f"data.max_length={args.short_length}", *args.overrides])
        short_rows.append({"seed": seed, **row})
        print(json.dumps(short_rows[-1]), flush=True)
    if short_rows:
        result[f"max_length_{args.short_length}"] = {"runs": short_rows, **summary(short_rows)}
    if args.compare_heads:
        seed = args.seeds[0]
        reference = args.workdir / f"seed{seed}"
        heads = {}
        default_head = OmegaConf.load(reference / ".hydra" / "config.yaml").head.name
        heads[default_head] = {**{k: long_rows[0][k] for k in ("test_acc", "val_acc_per_epoch", "wall_s")},
                               "evidence_reach_at_init": evidence_reach_at_init(reference, default_head, seed)}
        for head in args.compare_heads:
            row = train(args.workdir / f"head_{head}", [f"seed={seed}", f"head={head}", *args.overrides])
            heads[head] = {**{k: row[k] for k in ("command", "test_acc", "val_acc_per_epoch", "wall_s")},
                           "evidence_reach_at_init": evidence_reach_at_init(reference, head, seed)}
            print(json.dumps({head: heads[head]}), flush=True)
        result["heads_same_seed"] = heads
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")



def main_over_runs(script: str, runs: dict[str, list[str]], measure, goal: str) -> dict:
    """``bench/<script>.py [--runs ...] [--out FILE] [-- TRAIN_OVERRIDES...]``: ``measure(name, scratch,
    overrides)`` per named run, written with the command, machine and goal to bench/results/<script>.json."""
    import tempfile

    parser = argparse.ArgumentParser(description=f"bench/{script}.py")
    parser.add_argument("--runs", nargs="+", choices=sorted(runs), default=list(runs))
    parser.add_argument("overrides", nargs="*", help="after --: appended to every train.py run (tests shrink it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"{script}.json")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix=f"bench-{script}-") as scratch:
        rows = {name: measure(name, Path(scratch), args.overrides) for name in args.runs}
    result = {
        "command": f"PYTHONPATH=src python bench/{script}.py " + " ".join(sys.argv[1:]),
        "started": started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "goal": goal,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return rows

if __name__ == "__main__":
    main()
