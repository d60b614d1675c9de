"""torch.compile (``model.compile=true``) against eager, per backend: step time and compile time.

    PYTHONPATH=src python bench/compile.py [--backends block_sparse sdpa] [--length 2048] [--steps 5]
        [--hidden 256 --layers 4 --batch 2 --block 64] [--out FILE]

The issue-18 shape by default (hidden 256, 4 layers, block 64, r 3, batch 2, n 2,048, CPU, fp32,
dropout 0.1). Per backend, eager and compiled builds of the same weights: the median of ``--steps``
training steps (forward, loss, backward, AdamW step) and of eval forwards after warm-up; the compile
time is the first compiled training step (forward+backward) and eval forward minus an eager one.
Goal: compiled training step >= 1.25x eager. Writes bench/results/compile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from bigbird_ft.models.network import build_model

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 1.25


def network(backend: str, args: argparse.Namespace, compiled: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = {"vocab_size": 8000, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
               "num_attention_heads": args.hidden // 64, "intermediate_size": 4 * args.hidden,
               "max_position_embeddings": args.length, "block_size": args.block, "num_random_blocks": 3,
               "attention_type": "block_sparse" if "sparse" in backend else "original_full",
               "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    return build_model({"compile": compiled}, {"name": backend}, {"name": "cls"}, encoder, 2).to(args.device)


def timed(fn, device: str = "cpu") -> float:
    started = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(backend: str, args: argparse.Namespace, compiled: bool) -> dict:
    net = network(backend, args, compiled)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 8000, (args.batch, args.length), generator=generator).to(args.device)
    mask = torch.ones_like(ids)
    labels = torch.tensor([0, 1] * (args.batch // 2) + [0] * (args.batch % 2)).to(args.device)

    def train_step() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(ids, mask), labels).backward()
        optimizer.step()

    def eval_forward() -> None:
        net.eval()
        with torch.no_grad():
            net(ids, mask)

    first_train, first_eval = timed(train_step, args.device), timed(eval_forward, args.device)
    train_s = statistics.median(timed(train_step, args.device) for _ in range(args.steps))
    eval_s = statistics.median(timed(eval_forward, args.device) for _ in range(args.steps))
    return {"train_step_s": round(train_s, 4), "eval_forward_s": round(eval_s, 4),
            "first_train_step_s": round(first_train, 2), "first_eval_forward_s": round(first_eval, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["block_sparse", "sdpa"])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "compile.json")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = {}
    for backend in args.backends:
        eager = measure(backend, args, compiled=False)
        compiled = measure(backend, args, compiled=True)
        rows[backend] = {
            "eager": eager, "compiled": compiled,
            "train_speedup": round(eager["train_step_s"] / compiled["train_step_s"], 3),
            "eval_speedup": round(eager["eval_forward_s"] / compiled["eval_forward_s"], 3),
            "compile_s": round(compiled["first_train_step_s"] - eager["train_step_s"]
                               + compiled["first_eval_forward_s"] - eager["eval_forward_s"], 1),
            "goal_met": eager["train_step_s"] / compiled["train_step_s"] >= GOAL,
        }
        print(backend, json.dumps(rows[backend]), flush=True)
    result = {
        "command": "PYTHONPATH=src python bench/compile.py " + " ".join(sys.argv[1:]),
        "shape": {k: getattr(args, k) for k in ("hidden", "layers", "batch", "block", "length")},
        "device": args.device,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "goal": f"compiled training step >= {GOAL}x eager",
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "backends": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
