"""Training-step time and peak memory of every attention backend vs sequence length (CPU or GPU).

Each (backend, length) runs in a fresh subprocess so that peak memory is that configuration's
alone. Model: BigBird, hidden 256, 4 layers, 4 heads, block 64, r=3, batch 2, random init.
One step = forward + backward of a linear probe on the last hidden state (flex on CPU:
forward only, FlexAttention has no CPU backward). One warm-up step, then the median of --steps.

Roofline: each worker also times the attention part alone (one layer's attention given q, k, v:
our backends' ``attend``, HF's ``bigbird_block_sparse_attention``, HF's original_full matmul/softmax
code; forward+backward, median of --steps after one warm-up) and a large ``torch.mm`` of the same
dtype and thread count, and reports ``attention_flops`` (the work the backend's pattern asks for:
N^2 for the dense backends, window + global + random blocks from the block plan for the sparse
ones; backward counted as 2x forward), ``attention_gflops`` (those FLOPs over the measured time),
``matmul_gflops`` and ``roofline_fraction`` = attention_gflops / matmul_gflops.

--rounds R runs every configuration R times, interleaved (round 1 of all, then round 2, ...); a
row's times are the medians over rounds and its ratios the medians of the per-round ratios.

Peak memory: on CPU ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the timed steps minus
its value after the model and inputs were built (process high-water mark, so it includes
allocator slack); on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation after build.

    python bench/attention.py                               # all backends, n = 1024..8192
    python bench/attention.py --backends sdpa block_sparse --lengths 1024 4096
    # the default experiment's model (block 16, batch 8)
    python bench/attention.py --preset longrange --backends hf_block_sparse block_sparse --lengths 2048 4096 --dropout 0.0
    # where the time goes: one profiled step per configuration (README's breakdown)
    python bench/attention.py --backends hf_block_sparse block_sparse --lengths 4096 --dropout 0.0 --steps 1 \
        --profile --out bench/results/attention_profile.json
    # GPU: the base-size architecture (768 x 12 layers, random init), bf16 autocast, batch 1
    python bench/attention.py --device cuda --preset base --precision bf16 --lengths 4096 8192 \
        --out bench/results/attention_gpu_base.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ALL_BACKENDS = ["hf_full", "hf_block_sparse", "sdpa", "block_sparse", "flex"]
DEFAULT_LENGTHS = [1024, 2048, 4096, 8192]
HF_FULL_DEFAULT_MAX = 4096  # beyond this hf_full takes minutes per step on CPU
REFERENCE = "hf_block_sparse"
RESULTS = Path(__file__).resolve().parent / "results"

MODEL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
BLOCK_SIZE = 64
NUM_RANDOM_BLOCKS = 3
BATCH = 2
# --preset: the model each configuration trains (r = 3 in all)
PRESETS = {
    "small": {"model": MODEL, "batch": BATCH, "block_size": BLOCK_SIZE},
    "base": {  # google/bigbird-roberta-base's shape, random init (no hub weights needed)
        "model": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        "batch": 1,
        "block_size": BLOCK_SIZE,
    },
    "longrange": {  # the default experiment's model (conf/model/bigbird_tiny.yaml, batch 8)
        "model": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        "batch": 8,
        "block_size": 16,
    },
}


def _maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def run_one(
    backend_name: str, length: int, steps: int, device: str, dropout: float, preset: str = "small",
    precision: str = "fp32", profile: bool = False, hidden_act: str = "gelu_new",
) -> dict[str, Any]:
    """One configuration, in this process (the worker side)."""
    import contextlib

    import torch
    from transformers import BigBirdConfig, BigBirdModel

    from bigbird_ft.attention import build_backend

    torch.manual_seed(0)
    block_size = PRESETS[preset]["block_size"]
    backend = build_backend(backend_name, block_size=block_size, num_random_blocks=NUM_RANDOM_BLOCKS)
    config = BigBirdConfig(
        vocab_size=1000,
        max_position_embeddings=max(length, 4096),
        block_size=block_size,
        num_random_blocks=NUM_RANDOM_BLOCKS,
        attention_type=backend.hf_attention_type,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=0,
        hidden_act=hidden_act,
        **PRESETS[preset]["model"],
    )
    batch = PRESETS[preset]["batch"]
    encoder = BigBirdModel(config, add_pooling_layer=False).to(device)
    backend.attach(encoder)
    encoder.train()
    probe = torch.nn.Linear(config.hidden_size, 1).to(device)
    ids = torch.randint(1, config.vocab_size, (batch, length), device=device)
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    mask[-1, length - length // 4 :] = 0  # the last row a quarter padded
    ids[mask == 0] = 0
    forward_only = device == "cpu" and not backend.supports_cpu_training
    cuda = device.startswith("cuda")

    def autocast() -> Any:
        if precision == "bf16":
            return torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> None:
        if forward_only:
            with torch.no_grad(), autocast():
                backend.encode(encoder, ids, mask)
            return
        encoder.zero_grad(set_to_none=True)
        with autocast():
            hidden = backend.encode(encoder, ids, mask)
            loss = probe(hidden).float().mean()
        loss.backward()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _maxrss_mib()
    step()  # warm-up (includes plan building and, for flex on GPU, compilation)
    sync()
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _maxrss_mib() - base
    extra = {"profile": profile_step(step, sync)} if profile else {}
    roofline = attention_roofline(backend_name, backend, encoder, ids, mask, steps, dropout, forward_only,
                                  autocast, sync, torch.bfloat16 if precision == "bf16" else torch.float32)
    return {**extra,
        "backend": backend_name,
        "length": length,
        "mode": "forward" if forward_only else "forward+backward",
        "times_s": times,
        "median_s": statistics.median(times),
        "tokens_per_s": int(mask.sum()) / statistics.median(times),
        "preset": preset,
        "precision": precision,
        "cpu_times_s": cpu_times,
        "median_cpu_s": statistics.median(cpu_times),
        "peak_mem_mib": peak,
        "baseline_mem_mib": base / 2**20 if cuda else base,
        **roofline,
    }


def attention_flops(sparse: bool, batch: int, heads: int, length: int, dim: int, block: int,
                    random_blocks: int, backward: bool) -> int:
    """FLOPs of one layer's attention: 2 matmuls (QK^T, PV) x 2 FLOPs per multiply-add, per attended
    (query, key) pair; backward = 2x forward (dQ, dK, dV, dP). Sparse: each middle query block
    attends 5 + r key blocks (first, 3-block window, r random, last), the first and last query
    blocks every key."""
    if sparse:
        blocks = length // block
        pairs = (blocks - 2) * block * (5 + random_blocks) * block + 2 * block * length
    else:
        pairs = length * length
    forward = 4 * dim * pairs * batch * heads
    return forward * (3 if backward else 1)


def matmul_gflops(device: str, dtype: Any, sync: Any, size: int = 2048, reps: int = 5) -> float:
    """This machine's throughput on one large square matmul (same dtype, same threads)."""
    import torch

    size = 8192 if device.startswith("cuda") else size
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(reps + 1):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[1:]) / 1e9


def attention_roofline(backend_name: str, backend: Any, encoder: Any, ids: Any, mask: Any, steps: int,
                       dropout: float, forward_only: bool, autocast: Any, sync: Any, dtype: Any) -> dict[str, Any]:
    """Time one layer's attention part alone on random q, k, v of the run's shape (see module doc)."""
    import torch
    from transformers import BigBirdModel

    config = encoder.config
    batch, length = ids.shape
    heads = config.num_attention_heads
    dim = config.hidden_size // heads
    layer = encoder.encoder.layer[0].attention.self
    grad = not forward_only

    def projection() -> Any:
        # the layout HF's projections give: (B, N, H*D) memory seen as (B, H, N, D)
        tensor = torch.randn(batch, length, heads * dim, device=ids.device, dtype=dtype)
        return tensor.view(batch, length, heads, dim).transpose(1, 2).requires_grad_(grad)

    query, key, value = projection(), projection(), projection()
    sparse = backend_name in ("block_sparse", "hf_block_sparse", "flex") and length > backend.min_sparse_length()
    if hasattr(layer, "attend_sparse"):
        from bigbird_ft.attention.patched import dense_attention

        ctx = backend.make_context(encoder, ids, mask)

        def core() -> Any:
            if ctx.sparse:
                return layer.attend_sparse(query, key, value, ctx, dropout)
            return dense_attention(query, key, value, ctx, dropout)
    elif backend_name == "hf_block_sparse":
        blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
            mask.to(dtype), config.block_size)

        def core() -> Any:
            return layer.bigbird_block_sparse_attention(
                query, key, value, band, from_mask, to_mask, blocked, blocked, heads, config.num_random_blocks,
                dim, config.block_size, config.block_size, batch, length, length, seed=layer.seed,
                plan_from_length=None, plan_num_rand_blocks=None)[0]
    else:  # hf_full: the lines of HF's BigBirdSelfAttention.forward after the projections
        extended = (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

        def core() -> Any:
            scores = torch.matmul(query, key.transpose(-1, -2)) / dim**0.5 + extended
            probs = torch.nn.functional.dropout(scores.softmax(dim=-1), dropout, training=True)
            return torch.matmul(probs, value)

    grad_out = torch.randn(batch, heads, length, dim, device=ids.device, dtype=dtype)

    def run() -> None:
        with autocast(), torch.set_grad_enabled(grad):
            out = core()
        if grad:
            # HF's block-sparse returns (B, N, H, D): any gradient of the right size will do
            out.backward(grad_out.reshape(out.shape))
            query.grad = key.grad = value.grad = None

    times = []
    for _ in range(steps + 1):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    flops = attention_flops(sparse, batch, heads, length, dim, config.block_size, config.num_random_blocks, grad)
    peak = matmul_gflops(str(ids.device), dtype, sync)
    achieved = flops / seconds / 1e9
    return {
        "attention_s": seconds,
        "attention_flops": flops,
        "attention_gflops": achieved,
        "matmul_gflops": peak,
        "roofline_fraction": achieved / peak,
    }


def profile_step(step: Any, sync: Any, top: int = 15) -> dict[str, Any]:
    """One more step under torch.profiler: total self time and the ops that take most of it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        sync()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    return {
        "self_cpu_total_s": round(total, 3),
        "top_ops": [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count}
                    for e in events[:top]],
    }


def run_subprocess(backend: str, length: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and parse its JSON line."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--backends",
        backend,
        "--lengths",
        str(length),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--dropout",
        str(args.dropout),
        "--preset",
        args.preset,
        "--precision",
        args.precision,
        "--hidden-act",
        args.hidden_act,
        *(["--profile"] if args.profile else []),
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"backend": backend, "length": length, "error": " | ".join(tail)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def add_ratios(results: list[dict[str, Any]]) -> None:
    """time and memory of each configuration over hf_block_sparse's at the same length."""
    reference = {r["length"]: r for r in results if r["backend"] == REFERENCE and "median_s" in r}
    for r in results:
        ref = reference.get(r["length"])
        if ref is None or "median_s" not in r:
            continue
        r["time_ratio_vs_hf_block_sparse"] = r["median_s"] / ref["median_s"]
        r["cpu_time_ratio_vs_hf_block_sparse"] = r["median_cpu_s"] / ref["median_cpu_s"]
        if ref["peak_mem_mib"] > 0:
            r["mem_ratio_vs_hf_block_sparse"] = r["peak_mem_mib"] / ref["peak_mem_mib"]


RATIO_KEYS = ("time_ratio_vs_hf_block_sparse", "cpu_time_ratio_vs_hf_block_sparse", "mem_ratio_vs_hf_block_sparse")
ROUND_MEDIANS = ("median_s", "median_cpu_s", "peak_mem_mib", "tokens_per_s", "attention_s", "attention_gflops",
                 "matmul_gflops", "roofline_fraction")


def combine_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per configuration: the medians over rounds (ratios: of the per-round ratios)."""
    if len(rounds) == 1:
        return rounds[0]
    combined = []
    for first, *others in zip(*rounds, strict=True):
        row = dict(first)
        every = [first, *others]
        if any("error" in r for r in every):
            combined.append(next(r for r in every if "error" in r))
            continue
        for key in (*ROUND_MEDIANS, *RATIO_KEYS):
            values = [r[key] for r in every if r.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
                row[f"{key}_per_round"] = values
        combined.append(row)
    return combined


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'backend':16} {'n':>5} {'mode':16} {'wall s':>8} {'cpu s':>8} {'tokens/s':>9} {'peak MiB':>9} "
        f"{'wall/hf_bs':>10} {'cpu/hf_bs':>9} {'mem/hf_bs':>9} {'attn GF/s':>9} {'roofline':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['backend']:16} {r['length']:>5} error: {r['error']}")
            continue
        ratios = [
            "" if r.get(key) is None else f"{r[key]:.2f}"
            for key in (
                "time_ratio_vs_hf_block_sparse",
                "cpu_time_ratio_vs_hf_block_sparse",
                "mem_ratio_vs_hf_block_sparse",
            )
        ]
        lines.append(
            f"{r['backend']:16} {r['length']:>5} {r['mode']:16} {r['median_s']:>8.2f} "
            f"{r['median_cpu_s']:>8.2f} {r.get('tokens_per_s', 0):>9.0f} {r['peak_mem_mib']:>9.0f} "
            f"{ratios[0]:>10} {ratios[1]:>9} {ratios[2]:>9} {r.get('attention_gflops', 0):>9.1f} "
            f"{r.get('roofline_fraction', 0):>8.2f}"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, (ax_time, ax_cpu, ax_mem) = plt.subplots(1, 3, figsize=(16, 4.5))
    for backend in ALL_BACKENDS:
        rows = sorted(
            (r for r in results if r["backend"] == backend and "median_s" in r), key=lambda r: r["length"]
        )
        if not rows:
            continue
        label = backend + (" (forward only)" if rows[0]["mode"] == "forward" else "")
        lengths = [r["length"] for r in rows]
        ax_time.plot(lengths, [r["median_s"] for r in rows], marker="o", label=label)
        ax_cpu.plot(lengths, [r["median_cpu_s"] for r in rows], marker="o", label=label)
        ax_mem.plot(lengths, [max(r["peak_mem_mib"], 1.0) for r in rows], marker="o", label=label)
    panels = (
        (ax_time, "median step wall time (s)"),
        (ax_cpu, "median step CPU time (s, all threads)"),
        (ax_mem, "peak RSS over baseline (MiB)"),
    )
    for ax, ylabel in panels:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8)
    preset = PRESETS[results[0].get("preset", "small")]
    shape = preset["model"]
    fig.suptitle(
        f"BigBird attention backends: one training step, hidden {shape['hidden_size']}, "
        f"{shape['num_hidden_layers']} layers, block {preset['block_size']}, r={NUM_RANDOM_BLOCKS}, batch {preset['batch']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def meta_for(args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    """How the numbers of one invocation were taken."""
    preset = PRESETS[args.preset]
    return {
        "command": " ".join(["python", *sys.argv]),
        "backends": args.backends,
        "lengths": args.lengths,
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "model": {**preset["model"], "block_size": preset["block_size"], "num_random_blocks": NUM_RANDOM_BLOCKS,
                  "batch": preset["batch"]},
        "preset": args.preset,
        "precision": args.precision,
        "dropout": args.dropout,
        "hidden_act": args.hidden_act,
        "steps": args.steps,
        "warmup_steps": 1,
        "rounds": args.rounds,
        "time": (
            "median of timed steps, forward+backward (flex on CPU: forward only, no_grad); wall = "
            "perf_counter, cpu = process_time (all threads; less sensitive to other load on the machine)"
        ),
        "memory": (
            "CUDA max_memory_allocated minus allocation after build"
            if args.device.startswith("cuda")
            else "ru_maxrss (process peak RSS) after the steps minus ru_maxrss after model+input build"
        ),
        "reference": REFERENCE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=ALL_BACKENDS, choices=ALL_BACKENDS)
    parser.add_argument("--lengths", nargs="+", type=int, default=DEFAULT_LENGTHS)
    parser.add_argument(
        "--steps", type=int, default=3, help="timed steps after one warm-up (median reported)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    parser.add_argument("--preset", choices=list(PRESETS), default="small", help="model size (see PRESETS)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    parser.add_argument("--hidden-act", default="gelu_new",
                        help="every backend's FFN activation: gelu_new (HF BigBird's, default) or "
                             "gelu_pytorch_tanh (what bigbird_ft builds: the same function, fused)")
    parser.add_argument(
        "--hf-full-max", type=int, default=HF_FULL_DEFAULT_MAX, help="skip hf_full above this length"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every configuration this many times, interleaved (medians reported)")
    parser.add_argument("--out", type=Path, default=RESULTS / "attention.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other configurations already in --out (this run replaces its own)",
    )
    parser.add_argument("--profile", action="store_true",
                        help="also record one step's torch.profiler breakdown (top ops by self CPU time)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_one(args.backends[0], args.lengths[0], args.steps, args.device, args.dropout,
                                 args.preset, args.precision, args.profile, args.hidden_act)))
        return

    import torch

    rounds: list[list[dict[str, Any]]] = []
    for number in range(args.rounds):
        results = []
        for length in args.lengths:
            for backend in args.backends:
                if backend == "hf_full" and length > args.hf_full_max:
                    print(f"skip hf_full n={length} (> --hf-full-max {args.hf_full_max})", flush=True)
                    continue
                result = run_subprocess(backend, length, args)
                results.append(result)
                shown = result.get("median_s", result.get("error"))
                print(f"round {number + 1}: {backend:16} n={length:<5} {shown}", flush=True)
        add_ratios(results)
        rounds.append(results)
    results = combine_rounds(rounds)
    runs = [meta_for(args, torch)]
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
        ran = {(r["backend"], r["length"]) for r in results}
        kept = [r for r in previous["results"] if (r["backend"], r["length"]) not in ran]
        results = sorted(kept + results, key=lambda r: (r["length"], ALL_BACKENDS.index(r["backend"])))
        runs = previous.get("runs", [previous.get("meta")]) + runs
    if args.rounds == 1 or args.merge:
        add_ratios(results)
    print()
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    png = args.out.with_suffix(".png")
    if plot(results, png):
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
