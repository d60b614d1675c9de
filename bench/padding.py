"""Padding efficiency and epoch time: pad-to-max vs dynamic padding vs dynamic padding + length bucketing.

    PYTHONPATH=src python bench/padding.py [--max-batches N] [--threads 2]

Hyperpartisan train (645 articles, ../shared/data) with the real BigBird tokenizer, max_length 4096,
batch 8, the tiny model (hidden 64, 2 layers, block 16, hf_block_sparse). Efficiency = real tokens /
padded tokens over all batches of one epoch. Time = forward + backward (no optimizer step) over the
epoch's batches; with ``--max-batches N`` only N batches per strategy are timed (spread evenly over its
batches sorted by length) and the epoch time is extrapolated (mean x number of batches), said so in the
output. The strategies' batches are timed round-robin, so load from other processes hits them alike.
Writes bench/results/padding.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from bigbird_ft.data.sampler import LengthBucketBatchSampler
from bigbird_ft.data.sources import HyperpartisanDataModule
from bigbird_ft.inputs.collate import BlockPaddingCollator
from bigbird_ft.models.classifier import BigBirdClassifier
from bigbird_ft.models.factory import build_classifier
from bigbird_ft.models.tokenizer import resolve_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MAX_LENGTH, BATCH, BLOCK, SEED = 4096, 8, 16, 0
MODEL = {
    "pretrained": None,
    "block_size": BLOCK,
    "num_random_blocks": 3,
    "config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
               "max_position_embeddings": MAX_LENGTH, "hidden_act": "gelu_new"},
}


def features(cache_dir: Path) -> tuple[list[dict], object]:
    tokenizer = resolve_tokenizer(str(SHARED / "tokenizers/bigbird-roberta-base/spiece.model"), cache_dir=cache_dir)
    train = HyperpartisanDataModule(dir=str(SHARED / "data/hyperpartisan"), cache_dir=str(cache_dir)).load_splits()
    train = train["train"]
    texts, labels_column = list(train["text"]), list(train["label"])
    labels = sorted(set(labels_column))
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    rows = [{"input_ids": ids, "labels": labels.index(label)} for ids, label in zip(enc["input_ids"], labels_column,
                                                                                   strict=True)]
    return rows, tokenizer


def loaders(rows: list[dict], tokenizer) -> dict[str, DataLoader]:
    generator = torch.Generator().manual_seed(SEED)
    pad_max = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    lengths = [len(r["input_ids"]) for r in rows]
    return {
        "pad_to_max_length": DataLoader(rows, batch_size=BATCH, shuffle=True, collate_fn=pad_max, generator=generator),
        "dynamic": DataLoader(rows, batch_size=BATCH, shuffle=True, collate_fn=BlockPaddingCollator(tokenizer, BLOCK),
                              generator=generator),
        "dynamic_bucketed": DataLoader(rows, batch_sampler=LengthBucketBatchSampler(lengths, BATCH, seed=SEED),
                                       collate_fn=BlockPaddingCollator(tokenizer, BLOCK)),
    }


def build_model(tokenizer) -> BigBirdClassifier:
    torch.manual_seed(SEED)
    return build_classifier(
        model=MODEL, attention={"name": "hf_block_sparse"}, head={"name": "cls", "dropout": 0.0},
        id2label={0: "false", 1: "true"}, tokenizer=tokenizer, optim={"lr": 1e-3},
    )


def sample(batches: list[dict], max_batches: int | None) -> list[dict]:
    """All batches, or N spread evenly over the batches sorted by padded length (a stratified sample:
    a few random batches of a random-order epoch vary too much in length to stand for the epoch)."""
    if not max_batches or max_batches >= len(batches):
        return batches
    by_length = sorted(batches, key=lambda b: b["input_ids"].shape[1])
    return [by_length[int(i)] for i in np.linspace(0, len(batches) - 1, max_batches).round()]


def step_seconds(model: BigBirdClassifier, batch: dict) -> float:
    started = time.perf_counter()
    loss, _ = model._step(batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def run_all(epochs: dict[str, list[dict]], model: BigBirdClassifier, max_batches: int | None) -> dict[str, dict]:
    """Time the strategies' batches round-robin, so that a busy (shared) CPU slows them alike."""
    timed = {name: sample(batches, max_batches) for name, batches in epochs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in epochs}
    model.train()
    step_seconds(model, timed["dynamic_bucketed"][0])  # warm-up, not counted
    for i in range(max(len(t) for t in timed.values())):
        for name, chosen in timed.items():
            if i < len(chosen):
                seconds[name].append(step_seconds(model, chosen[i]))
    results = {}
    for name, batches in epochs.items():
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = sum(b["attention_mask"].numel() for b in batches)
        spent = sum(seconds[name])
        results[name] = {
            "pad_efficiency": real / padded,
            "real_tokens": real,
            "padded_tokens": padded,
            "mean_padded_length": padded / sum(len(b["labels"]) for b in batches),
            "batches": len(batches),
            "timed_batches": len(timed[name]),
            "timed_s": spent,
            "epoch_s": spent / len(timed[name]) * len(batches),
            "epoch_s_extrapolated": len(timed[name]) < len(batches),
            "real_tokens_per_s": sum(int(b["attention_mask"].sum()) for b in timed[name]) / spent,
        }
        print(f"{name}: efficiency {results[name]['pad_efficiency']:.3f}, {len(timed[name])} batches in "
              f"{spent:.1f}s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-batches", type=int, default=None, help="time only the first N batches per strategy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "padding.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows, tokenizer = features(Path(args.cache_dir))
    lengths = np.array([len(r["input_ids"]) for r in rows])
    model = build_model(tokenizer)
    epochs = {name: list(loader) for name, loader in loaders(rows, tokenizer).items()}
    results = run_all(epochs, model, args.max_batches)
    report = {
        "command": "PYTHONPATH=src python " + " ".join(["bench/padding.py", *sys.argv[1:]]),
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "data": "hyperpartisan train (645 articles), real BigBird tokenizer",
        "max_length": MAX_LENGTH, "batch_size": BATCH, "block_size": BLOCK,
        "model": "hidden 64, 2 layers, 4 heads, hf_block_sparse, forward+backward",
        "token_lengths": {"median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
                          "max": int(lengths.max())},
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
                   f"{args.threads} threads",
        "max_batches": args.max_batches,
        "strategies": results,
    }
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    base = results["pad_to_max_length"]["epoch_s"]
    print(f"\n| strategy | pad efficiency | mean padded length | epoch time (s){' (extrapolated)' if args.max_batches else ''}"
          " | speed-up |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['pad_efficiency']:.3f} | {r['mean_padded_length']:.0f} | {r['epoch_s']:.1f} | "
              f"{base / r['epoch_s']:.1f}x |")


if __name__ == "__main__":
    main()
