"""Data setup time (prepare_raw + tokenizer + tokenized splits) of a first and a second identical run.

    PYTHONPATH=src python bench/data_cache.py [--data hyperpartisan|peps] [--max-length 4096]

Each run is a fresh process on the same new cache folder, as two ``python train.py`` runs would be;
the time excludes Python imports. Writes bench/results/data_cache_<data>.json.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def one_setup(data: str, max_length: int, cache_dir: str) -> dict[str, float]:
    """Runs in the child process: the same steps as train() before the Trainer."""
    from bigbird_ft.data.sources import HyperpartisanDataModule, PepsDataModule
    from bigbird_ft.models.tokenizer import resolve_tokenizer

    started = time.perf_counter()
    if data == "hyperpartisan":
        dm = HyperpartisanDataModule(dir=str(SHARED / "data/hyperpartisan"), cache_dir=cache_dir, max_length=max_length)
    else:
        dm = PepsDataModule(dir=str(SHARED / "data/peps"), cache_dir=cache_dir, max_length=max_length,
                            text_column=["title", "text"], label_column="type")
    dm.prepare_raw()
    raw_done = time.perf_counter()
    tokenizer = resolve_tokenizer(str(SHARED / "tokenizers/bigbird-roberta-base/spiece.model"), cache_dir=cache_dir)
    tok_done = time.perf_counter()
    dm.connect(tokenizer, block_size=64, max_positions=4096)
    dm.setup()
    done = time.perf_counter()
    return {"prepare_raw_s": raw_done - started, "tokenizer_s": tok_done - raw_done, "setup_s": done - tok_done,
            "total_s": done - started, "train_rows": len(dm.tokenized["train"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["hyperpartisan", "peps"], default="hyperpartisan")
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/data_cache_<data>.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_setup(args.data, args.max_length, args.child)))
        return
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for _ in range(2):
            out = subprocess.run([sys.executable, __file__, "--data", args.data, "--max-length", str(args.max_length),
                                  "--child", cache_dir], check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"command": "PYTHONPATH=src python " + " ".join(["bench/data_cache.py", *sys.argv[1:]]),
              "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
              "data": args.data, "max_length": args.max_length, "first": runs[0], "second": runs[1],
              "speedup": runs[0]["total_s"] / runs[1]["total_s"],
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"}
    for name, run in (("first", runs[0]), ("second", runs[1])):
        print(f"{name:6s} prepare_raw {run['prepare_raw_s']:.2f}s  tokenizer {run['tokenizer_s']:.2f}s  "
              f"setup {run['setup_s']:.2f}s  total {run['total_s']:.2f}s")
    print(f"speed-up {result['speedup']:.1f}x")
    target = args.out or ROOT / "bench" / "results" / f"data_cache_{args.data}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
