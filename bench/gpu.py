"""Every GPU measurement in one run, within a fixed time budget: writes bench/results/gpu.json.

    PYTHONPATH=src python bench/gpu.py                 # one CUDA GPU, <= --budget seconds (480)
    PYTHONPATH=src python bench/gpu.py --dry-run       # CPU, tiny shapes: the same parts end to end

Parts, in this order, each in subprocesses with a deadline (a part that fails or runs out of time
is recorded with its error; the parts after it still run):

1. ``attention``: bench/attention.py's workers at ``--preset base --precision bf16`` (768 x 12
   layers, random init, batch 1), n = 4,096 and 8,192, every backend forward+backward (flex
   included; hf_full at 4,096 only), with the roofline columns;
2. ``train_tokens_per_s``: ``hyperpartisan_base``'s shape trained by our Lightning stack
   (bigbird_base with random init, batch 4 x 4,096 tokens, bf16-mixed, fused AdamW) for
   ``attention=hf_block_sparse`` (the experiment's) and ``block_sparse`` (ours): tokens per second;
3. ``overhead``: bench/overhead.py (ours vs plain loop vs HF Trainer, tiny model, 512 tokens);
4. ``compile``: bench/compile.py, eager vs ``model.compile=true`` (block_sparse, sdpa).

The budget is split over the parts (``SHARES``); configurations that do not fit are skipped and
named in the JSON. Where a run of this script has not happened on a GPU, the README says so.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
#: fraction of the budget each part may use (what is left over passes to the next part)
SHARES = {"attention": 0.45, "train_tokens_per_s": 0.2, "overhead": 0.15, "compile": 0.2}


def plan(dry_run: bool) -> dict[str, Any]:
    """What each part runs: the real GPU shapes, or tiny CPU ones for --dry-run."""
    if dry_run:
        return {
            "device": "cpu",
            "attention": {"preset": "longrange", "precision": "fp32", "lengths": [512],
                          "backends": ["hf_block_sparse", "block_sparse"], "steps": 1, "hf_full_max": 512},
            "train": {"device": "cpu", "length": 256, "batch": 2, "steps": 4, "warmup": 1,
                      "model": ["model=bigbird_tiny"], "precision": "32-true"},
            "overhead": ["--steps", "4", "--warmup", "1", "--rounds", "1", "--length", "128", "--device", "cpu"],
            "compile": ["--backends", "block_sparse", "--length", "256", "--steps", "1", "--hidden", "64",
                        "--layers", "1", "--block", "16", "--device", "cpu"],
        }
    return {
        "device": "cuda",
        "attention": {"preset": "base", "precision": "bf16", "lengths": [4096, 8192],
                      "backends": ["hf_block_sparse", "block_sparse", "sdpa", "flex", "hf_full"], "steps": 3,
                      "hf_full_max": 4096},
        "train": {"device": "gpu", "length": 4096, "batch": 4, "steps": 20, "warmup": 5,
                  "model": ["model=bigbird_base", "model.pretrained=null"], "precision": "bf16-mixed"},
        "overhead": ["--steps", "40", "--warmup", "5", "--rounds", "2", "--device", "gpu"],
        "compile": ["--backends", "block_sparse", "sdpa", "--steps", "5", "--device", "cuda"],
    }


def run(cmd: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(return code or None on timeout, stdout, stderr tail)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout:.0f} s"
    return proc.returncode, proc.stdout, proc.stderr[-2000:]


def attention_part(settings: dict[str, Any], device: str, deadline: float) -> dict[str, Any]:
    rows, skipped = [], []
    for length in settings["lengths"]:
        for backend in settings["backends"]:
            if backend == "hf_full" and length > settings["hf_full_max"]:
                continue
            left = deadline - time.perf_counter()
            if left < 20:
                skipped.append(f"{backend} n={length}")
                continue
            code, out, err = run([sys.executable, str(BENCH / "attention.py"), "--worker", "--backends", backend,
                                  "--lengths", str(length), "--steps", str(settings["steps"]), "--device", device,
                                  "--dropout", "0.1", "--preset", settings["preset"],
                                  "--precision", settings["precision"]], left)
            if code == 0:
                rows.append(json.loads(out.strip().splitlines()[-1]))
            else:
                rows.append({"backend": backend, "length": length, "error": err.strip().splitlines()[-1:]})
    reference = {r["length"]: r for r in rows if r["backend"] == "hf_block_sparse" and "median_s" in r}
    for r in rows:
        if "median_s" in r and r["length"] in reference:
            r["time_ratio_vs_hf_block_sparse"] = r["median_s"] / reference[r["length"]]["median_s"]
    return {"settings": settings, "results": rows, "skipped": skipped}


def train_part(settings: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Our Lightning stack at the hyperpartisan_base shape, via bench/overhead.py's ``ours`` variant."""
    results = {}
    for attention in ("hf_block_sparse", "block_sparse"):
        left = deadline - time.perf_counter()
        if left < 20:
            results[attention] = {"error": "skipped: no time left in the budget"}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "train.json"
            code, _, err = run([sys.executable, str(BENCH / "overhead.py"), "--variants", "ours", "--rounds", "1",
                                "--attention", attention, "--length", str(settings["length"]),
                                "--batch-size", str(settings["batch"]), "--steps", str(settings["steps"]),
                                "--warmup", str(settings["warmup"]), "--device", settings["device"], "--out", str(out),
                                "--ours-overrides", *settings["model"], f"trainer.precision={settings['precision']}",
                                "optim=adamw"], left)
            if code == 0:
                ours = json.loads(out.read_text())["variants"]["ours"]
                results[attention] = {"tokens_per_s": ours["tokens_per_s"], "step_ms": ours["step_ms"],
                                      "peak_gpu_mib": ours["peak_gpu_mib"], "peak_rss_mib": ours["peak_rss_mib"]}
            else:
                results[attention] = {"error": err.strip().splitlines()[-1:]}
    return {"settings": settings, "results": results}


def script_part(script: str, args: list[str], deadline: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "part.json"
        code, _, err = run([sys.executable, str(BENCH / script), *args, "--out", str(out)],
                           deadline - time.perf_counter())
        if code == 0:
            return {"args": args, "result": json.loads(out.read_text())}
        return {"args": args, "error": err.strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: check the script end to end")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all parts together")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/gpu.json (gpu_dry_run.json)")
    args = parser.parse_args()
    out = args.out or RESULTS / ("gpu_dry_run.json" if args.dry_run else "gpu.json")

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here; run on a GPU machine, or pass --dry-run to check the script on CPU")
    settings = plan(args.dry_run)
    started = time.perf_counter()
    carry = 0.0
    parts: dict[str, Any] = {}
    for name, share in SHARES.items():
        part_start = time.perf_counter()
        deadline = part_start + share * args.budget + carry
        if name == "attention":
            parts[name] = attention_part(settings["attention"], settings["device"], deadline)
        elif name == "train_tokens_per_s":
            parts[name] = train_part(settings["train"], deadline)
        elif name == "overhead":
            parts[name] = script_part("overhead.py", settings["overhead"], deadline)
        else:
            parts[name] = script_part("compile.py", settings["compile"], deadline)
        parts[name]["seconds"] = round(time.perf_counter() - part_start, 1)
        carry = max(0.0, deadline - time.perf_counter())
        print(f"{name}: {parts[name]['seconds']} s", flush=True)
    report = {
        "command": " ".join(["PYTHONPATH=src python bench/gpu.py", *sys.argv[1:]]),
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run else "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "budget_s": args.budget,
        "total_s": round(time.perf_counter() - started, 1),
        "parts": parts,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} in {report['total_s']} s")


if __name__ == "__main__":
    main()
