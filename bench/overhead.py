"""Framework overhead: the same model, batches and optimizer trained by us, a plain loop and HF Trainer.

    PYTHONPATH=src python bench/overhead.py [--steps 40] [--warmup 5] [--rounds 5] [--length 512]

Four trainers, each in a fresh process (so peak RSS is its own), interleaved over ``--rounds``:

- ``ours``: ``BigBirdClassifier`` + Lightning ``Trainer`` built from ``conf/`` exactly as
  ``train.py`` builds them (default callbacks: rich progress bar, LR monitor; CSV logger; gradient
  clipping 1.0), minus checkpointing and validation;
- ``plain_ours``: the same ``BigBirdClassifier`` in a hand-written loop (forward, backward, clip,
  the module's own fused AdamW, linear warm-up schedule);
- ``plain_hf``: a stock ``BigBirdForSequenceClassification`` of the same shape in that loop
  (fused AdamW, as Trainer's default ``optim=adamw_torch_fused``);
- ``hf_trainer``: the stock model trained by ``transformers.Trainer`` (same lr, schedule, clip).

All use ``attention=hf_block_sparse`` (HF's block-sparse kernel, the one the stock model runs) and
``head=cls`` (the stock classifier's shape), random tokens of one fixed length, and the same seed.
Time per step = mean gap between consecutive optimizer-step ends after ``--warmup`` steps, so it
includes data loading, logging and callbacks. Writes bench/results/overhead.json.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("ours", "plain_ours", "plain_hf", "hf_trainer")
NUM_LABELS = 4


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(args: argparse.Namespace, workdir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[
            f"attention={args.attention}", "head=cls", f"data.max_length={args.length}",
            f"data.batch_size={args.batch_size}", f"paths.output_dir={workdir}",
            f"+trainer.max_steps={args.steps}", "+trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            "+trainer.enable_checkpointing=false", f"trainer.accelerator={args.device}", "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint=null",
            *args.ours_overrides,
        ])


def random_batches(args: argparse.Namespace, vocab_size: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.length)
    return [
        {
            "input_ids": torch.randint(5, vocab_size, shape, generator=generator),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "labels": torch.randint(0, NUM_LABELS, (args.batch_size,), generator=generator),
        }
        for _ in range(args.steps)
    ]


def build_ours(cfg) -> Any:
    """Our module as build_module makes it, with a fixed vocabulary instead of a trained tokenizer."""
    from omegaconf import OmegaConf

    from bigbird_ft.models.factory import build_classifier

    container = OmegaConf.to_container(cfg, resolve=True)
    model = container["model"]
    return build_classifier(
        model=model, attention=container["attention"], head=container["head"],
        id2label={i: f"class{i}" for i in range(NUM_LABELS)},
        tokenizer=_FixedVocab(int(model["tokenizer_vocab_size"])), optim=container["optim"],
        data={"max_length": int(cfg.data.max_length), "pad_to_multiple_of": int(cfg.model.block_size)},
    )


class _FixedVocab:
    """What make_encoder_config reads from a tokenizer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pad_token_id, self.cls_token_id, self.sep_token_id = 0, 2, 3

    def __len__(self) -> int:
        return self.size


def stock_model(module) -> Any:
    """BigBirdForSequenceClassification with our encoder's config (same shape, HF's own classifier)."""
    from transformers import BigBirdConfig, BigBirdForSequenceClassification

    values = {k: v for k, v in module.encoder.config.to_dict().items() if k not in ("id2label", "label2id")}
    config = BigBirdConfig(**values, num_labels=NUM_LABELS)
    return BigBirdForSequenceClassification(config)


def plain_loop(model, batches, cfg, device: str, forward) -> list[float]:
    """Forward, backward, clip, AdamW, linear warm-up: what Trainer and our module do per step."""
    from transformers import get_linear_schedule_with_warmup

    model.to(device).train()
    optim = cfg.optim
    if hasattr(model, "build_optimizer"):  # our module: the optimizer configure_optimizers builds
        optimizer = model.build_optimizer()
    else:  # the stock model: fused AdamW, as Trainer's default optim=adamw_torch_fused
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(optim.lr), weight_decay=float(optim.weight_decay),
                                      fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(float(optim.warmup_ratio) * len(batches)), len(batches))
    ends = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = forward(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.trainer.gradient_clip_val))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    return ends


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import hydra
    import lightning as L

    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix=f"overhead-{name}-"))
    cfg = compose(args, workdir)
    module = build_ours(cfg)
    batches = random_batches(args, int(cfg.model.tokenizer_vocab_size))
    device = "cuda" if args.device == "gpu" else "cpu"
    rss_before = peak_rss_mib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    if name == "ours":
        from bigbird_ft.config import instantiate_all

        class StepEnds(L.Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []

            def on_train_batch_end(self, *_: Any) -> None:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.ends.append(time.perf_counter())

        step_ends = StepEnds()
        trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[*instantiate_all(cfg.callbacks), step_ends],
                                          logger=instantiate_all(cfg.logger), use_distributed_sampler=False)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        trainer.fit(module, train_dataloaders=loader)
        ends = step_ends.ends
    elif name == "plain_ours":
        ends = plain_loop(module, batches, cfg, device, lambda m, b: m._step(b)[0])
    elif name == "plain_hf":
        ends = plain_loop(stock_model(module), batches, cfg, device, lambda m, b: m(**b).loss)
    else:
        ends = hf_trainer(stock_model(module), batches, cfg, args, workdir)
    gaps = [b - a for a, b in zip(ends[args.warmup :], ends[args.warmup + 1 :], strict=False)]
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"variant": name, "steps": len(ends), "step_s_mean": statistics.mean(gaps),
            "step_s_median": statistics.median(gaps), "rss_before_train_mib": rss_before,
            "peak_rss_mib": peak_rss_mib(), "peak_gpu_mib": peak_gpu}


def hf_trainer(model, batches, cfg, args: argparse.Namespace, workdir: Path) -> list[float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    examples = [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(args.batch_size)]

    class StepEnds(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, *_: Any, **__: Any) -> None:
            if torch.cuda.is_available() and args.device == "gpu":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    step_ends = StepEnds()
    training_args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay),
        warmup_steps=int(float(cfg.optim.warmup_ratio) * args.steps), max_grad_norm=float(cfg.trainer.gradient_clip_val),
        lr_scheduler_type="linear", logging_steps=int(cfg.trainer.log_every_n_steps), save_strategy="no",
        report_to=[], use_cpu=args.device == "cpu", dataloader_num_workers=0, seed=0,
    )
    Trainer(model=model, args=training_args, train_dataset=examples, callbacks=[step_ends]).train()
    return step_ends.ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="a subset (bench/gpu.py times ours alone at the base shape)")
    parser.add_argument("--attention", default="hf_block_sparse",
                        help="the backend of ours and plain_ours (the stock model always runs HF's)")
    parser.add_argument("--ours-overrides", nargs="*", default=[],
                        help="extra Hydra overrides for ours (e.g. callbacks.rich_progress_bar=null to profile)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args)))
        return

    passthrough = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--length", str(args.length),
                   "--batch-size", str(args.batch_size), "--device", args.device, "--attention", args.attention,
                   "--ours-overrides", *args.ours_overrides]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT / "src")}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for round_index in range(args.rounds):
        for variant in args.variants:
            out = subprocess.run([sys.executable, __file__, *passthrough, "--child", variant], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"round {round_index + 1} {variant}: {result['step_s_mean'] * 1000:.1f} ms/step, "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)

    summary = {}
    for variant, results in runs.items():
        summary[variant] = {
            "step_ms": round(statistics.median(r["step_s_mean"] for r in results) * 1000, 2),
            "step_ms_rounds": [round(r["step_s_mean"] * 1000, 2) for r in results],
            "peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in results), 1),
            "rss_before_train_mib": round(statistics.median(r["rss_before_train_mib"] for r in results), 1),
            "peak_gpu_mib": results[0]["peak_gpu_mib"],
            "tokens_per_s": round(args.batch_size * args.length
                                  / statistics.median(r["step_s_mean"] for r in results), 1),
        }
    # paired: each ratio is taken within a round (the variants ran back to back), then the median
    # over rounds; the machine's speed drifts between rounds more than the variants differ
    def paired(a: str, b: str, key: str = "step_s_mean") -> list[float]:
        return [x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)]

    wanted = {
        "ours / plain_ours (time)": ("ours", "plain_ours", "step_s_mean"),
        "ours / hf_trainer (time)": ("ours", "hf_trainer", "step_s_mean"),
        "hf_trainer / plain_hf (time)": ("hf_trainer", "plain_hf", "step_s_mean"),
        "plain_ours / plain_hf (time)": ("plain_ours", "plain_hf", "step_s_mean"),
        "ours / plain_ours (peak RSS)": ("ours", "plain_ours", "peak_rss_mib"),
        "ours / hf_trainer (peak RSS)": ("ours", "hf_trainer", "peak_rss_mib"),
    }
    pairs = {name: paired(a, b, key) for name, (a, b, key) in wanted.items() if a in runs and b in runs}
    ratios = {key: statistics.median(values) for key, values in pairs.items()}
    report = {
        "command": " ".join(["python bench/overhead.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "load_average_at_start": os.getloadavg()[0],
        "setup": {"length": args.length, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
                  "rounds": args.rounds, "device": args.device,
                  "model": " ".join(args.ours_overrides) or "bigbird_tiny (hidden 64, 2 layers)",
                  "attention": args.attention, "head": "cls"},
        "variants": summary,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratios_per_round": {k: [round(v, 3) for v in values] for k, values in pairs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| trainer | ms / step (median of rounds) | peak RSS MiB |\n|---|---|---|")
    for variant, s in summary.items():
        print(f"| {variant} | {s['step_ms']:.1f} | {s['peak_rss_mib']:.0f} |")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f} (rounds: {', '.join(f'{v:.3f}' for v in pairs[key])})")


if __name__ == "__main__":
    main()
