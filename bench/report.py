"""Markdown tables for the README and docs/, printed from bench/results (so every figure has its file).

    python bench/report.py quality   # bench/results/quality.json
    python bench/report.py serve     # bench/results/serve.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
QUALITY_NAMES = {
    "tfidf": "TF-IDF + logistic regression",
    "frozen": "frozen MiniLM, 8 windows of 512, + logistic regression",
    "truncate_512": "`reader=truncate` (first 512 tokens)",
    "head_tail_512": "`reader=head_tail` (128 + 382 tokens)",
    "chunks_4096": "`reader=chunks` (windows of 512 over 4,096 tokens)",
    "hierarchical_4096": "`reader=hierarchical` (8 segments of 512)",
    "sparse_4096": "`reader=sparse` (4,096 tokens, block-sparse)",
}


def quality(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = []
    for dataset, rows in data["results"].items():
        lines += [f"| {dataset} | test acc, mean ± std over seeds | 95 % CI | macro-F1 | 95 % CI | acc per seed |",
                  "|---|---|---|---|---|---|"]
        for row, r in rows.items():
            if "test/acc_ci95" not in r:
                continue
            seeds = ", ".join(f"{p['test/acc']:.3f}" for p in r["per_seed"])
            deterministic = " (deterministic)" if row in ("tfidf", "frozen") else ""
            lines.append(f"| {QUALITY_NAMES.get(row, row)} | {r['test/acc']:.3f} ± {r.get('test/acc_std', 0):.3f} | "
                         f"{r['test/acc_ci95'][0]:.3f}–{r['test/acc_ci95'][1]:.3f} | {r['test/f1']:.3f} | "
                         f"{r['test/f1_ci95'][0]:.3f}–{r['test/f1_ci95'][1]:.3f} | {seeds}{deterministic} |")
        lines.append("")
    return "\n".join(lines)


def serve(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = ["| model | predict's loop, docs/s | served req/s at 1 / 8 / 32 clients | p50 / p95 ms at 8 clients | "
             "served at 8 ÷ predict | 32 clients, long run |", "|---|---|---|---|---|---|"]
    for row, r in data["results"].items():
        levels = {level["clients"]: level for level in r["serve"]["levels"]}
        rates = " / ".join(f"{levels[c]['requests_per_s']:.1f}" for c in sorted(levels))
        at8 = levels[8]
        long = r["serve"].get("long_run")
        long_text = (f"{long['requests']} requests, {long['failed']} failed, memory {100 * long['rss_change']:+.1f} %"
                     if long else "not run")
        lines.append(f"| {row} | {r['predict']['loop_docs_per_s']:.1f} | {rates} | {at8['p50_ms']:.0f} / "
                     f"{at8['p95_ms']:.0f} | {r['serve8_over_predict_loop']:.2f} | {long_text} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("quality", "serve"))
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    print({"quality": quality, "serve": serve}[args.table](args.file or RESULTS / f"{args.table}.json"))


if __name__ == "__main__":
    main()
