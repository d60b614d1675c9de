"""``estimate=true``: what a run will cost, from its real data and a few measured steps, before training.

No library predicts this (transformers has an open request for a memory estimate by length). The
model here: the batches of an epoch are known exactly after tokenization and bucketing (the sampler
is seeded), so the only unknown is the time of one step as a function of its padded tokens
(batch x padded length). Two shapes are measured — the longest batch (which also sets the peak
memory) and the median one — and the step time is interpolated linearly in padded tokens between
them (block-sparse attention is linear in length; full attention below HF's switch length is not,
which is why the median, not the shortest, is the second point). Evaluation passes get the same
treatment with forward-only timings.
"""

from __future__ import annotations

import gc
import json
import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..inputs.collate import split_short_windows
from ..io_utils import write_json_atomic

#: timed repetitions per shape, after one untimed warm-up
REPEATS = 2


def padded_shapes(batches: Sequence[Sequence[int]], lengths: Sequence[int], multiple: int,
                  inputs: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(model inputs, padded length) of each batch, as the block-padding collator will make them.

    ``inputs``: model inputs per feature (``reader=chunks`` / ``hierarchical`` read a document as several
    windows, all of them in one step; default one each); ``lengths``: the longest input of each feature.
    """
    return [(sum(inputs[i] for i in b) if inputs else len(b),
             math.ceil(max(lengths[i] for i in b) / multiple) * multiple) for b in batches]


def window_groups(batches: Sequence[Sequence[int]], lengths: Sequence[int], multiple: int,
                  inputs: Sequence[int] | None = None,
                  window_lengths: Sequence[Sequence[int]] | None = None) -> list[list[tuple[int, int]]]:
    """Per batch, (model inputs, padded length) of each group the network encodes: the batch as the
    collator pads it, or, for documents read as windows (``window_lengths``: each feature's windows),
    the long windows and the short ones cut to their own longest (``split_short_windows``)."""
    shapes = padded_shapes(batches, lengths, multiple, inputs)
    if window_lengths is None:
        return [[shape] for shape in shapes]
    groups = []
    for batch, (n_inputs, padded) in zip(batches, shapes, strict=True):
        short, cut = split_short_windows([n for i in batch for n in window_lengths[i]], padded, multiple)
        groups.append([(n_inputs - sum(short), padded), (sum(short), cut)] if cut else [(n_inputs, padded)])
    return groups


def segment_lengths(dataset: Any) -> list[list[int]] | None:
    """Each feature's window lengths when features are documents read as windows, else None."""
    ids = dataset["input_ids"]
    if not ids or not ids[0] or isinstance(ids[0][0], int):
        return None
    return [[len(window) for window in feature] for feature in ids]


def eval_batches(n: int, batch_size: int) -> list[list[int]]:
    """The evaluation loaders read in order (no shuffling, no bucketing)."""
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def process_age_s() -> float | None:
    """Seconds since this process started (imports included), from /proc; None elsewhere."""
    import os

    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_call(fn: Callable[[], None], device: torch.device) -> float:
    """Median seconds of ``REPEATS`` calls after a warm-up one."""
    fn()
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class StepTimer:
    """Times a real training step (forward, loss, backward, optimizer step) and an eval forward."""

    def __init__(self, module: Any, device: torch.device) -> None:
        self.module = module.to(device)
        self.device = device
        self.optimizer = module.build_optimizer()

    def _batch(self, rows: list[dict[str, Any]], collate: Callable) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in collate(rows).items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        def step() -> None:
            self.module.train()
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.module.loss(self.module(batch["input_ids"], batch["attention_mask"]), batch["labels"])
            loss.backward()
            self.optimizer.step()
        return time_call(step, self.device)

    def eval_step(self, batch: dict[str, torch.Tensor]) -> float:
        def forward() -> None:
            self.module.eval()
            with torch.no_grad():
                self.module(batch["input_ids"], batch["attention_mask"])
        return time_call(forward, self.device)


def linear_in_tokens(points: list[tuple[int, float]]) -> Callable[[int], float]:
    """Seconds as a line through two (padded tokens, seconds) points; proportional if they coincide."""
    (x0, y0), (x1, y1) = sorted(points)
    if x1 == x0:
        return lambda tokens: y1 * tokens / x1
    slope = (y1 - y0) / (x1 - x0)
    return lambda tokens: max(y0 + slope * (tokens - x0), 0.0)


def tokens(groups: Sequence[tuple[int, int]]) -> int:
    """A batch's padded tokens: what one step computes over."""
    return sum(inputs * length for inputs, length in groups)


def pick(shapes: list[list[tuple[int, int]]], batches: Sequence[Sequence[int]]) -> dict[str, Sequence[int]]:
    """The batch with the most padded tokens and the median one."""
    order = sorted(range(len(shapes)), key=lambda i: tokens(shapes[i]))
    return {"longest": batches[order[-1]], "median": batches[order[len(order) // 2]]}


def estimate_run(cfg: Any, module: Any, datamodule: Any, output_dir: Path, startup_s: float) -> dict[str, Any]:
    """Measure, predict, print; writes ``estimate.json`` into the run dir. Trains nothing.

    ``startup_s`` (imports, data preparation, model build so far) is counted once in the predicted
    run time: a run after this one finds the same caches this one filled. One process: under DDP
    each rank reads 1/world of the batches, which this does not model.
    """
    startup_s = process_age_s() or startup_s
    multiple = int(datamodule.inputs.pad_to_multiple_of)
    collate = datamodule.collator()
    splits = {name: datamodule.tokenized[name] for name in ("train", "validation", "test")
              if name in datamodule.tokenized}
    lengths = {name: list(ds["input_length"] if "input_length" in ds.column_names else ds["length"])
               for name, ds in splits.items()}
    windows = {name: list(ds["n_inputs"]) if "n_inputs" in ds.column_names else None for name, ds in splits.items()}
    segments = {name: segment_lengths(ds) for name, ds in splits.items()}
    train_batches = list(datamodule.train_dataloader().batch_sampler)
    train_shapes = window_groups(train_batches, lengths["train"], multiple, windows["train"], segments["train"])
    eval_plan = {name: eval_batches(len(lengths[name]), datamodule.inputs.eval_batch_size)
                 for name in ("validation", "test") if name in lengths}
    epochs = int(cfg.trainer.get("max_epochs") or 1)
    tested = bool(cfg.get("test", False)) and "test" in eval_plan
    real = sum(splits["train"]["length"])  # every token of every input
    padded = sum(tokens(groups) for groups in train_shapes)
    report: dict[str, Any] = {
        "reader": datamodule.inputs.reader.name,
        "documents_per_epoch": len(set(splits["train"]["row"])),
        "inputs_per_epoch": sum(b for groups in train_shapes for b, _ in groups),
        "batches_per_epoch": len(train_batches),
        "real_tokens_per_epoch": real,
        "padded_tokens_per_epoch": padded,
        "padding_efficiency": round(real / padded, 4),
        "epochs": epochs,
        "startup_s": round(startup_s, 1),
        "devices": {},
    }
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and str(cfg.trainer.get("accelerator", "auto")) != "cpu":
        devices.append(torch.device("cuda"))
    for device in devices:
        report["devices"][device.type] = measure_device(
            module, device, collate, splits, train_batches, train_shapes, eval_plan, lengths, multiple, epochs,
            tested, startup_s, windows, segments)
    target = torch.device("cuda") if "cuda" in report["devices"] and cfg.trainer.get("accelerator") != "cpu" \
        else torch.device("cpu")
    report["predicted_for"] = target.type
    report["predicted_run_s"] = report["devices"][target.type]["predicted_run_s"]
    write_json_atomic(output_dir / "estimate.json", report)
    print_report(report)
    return report


def measure_device(module: Any, device: torch.device, collate: Callable, splits: dict[str, Any],
                   train_batches: list, train_shapes: list[list[tuple[int, int]]], eval_plan: dict[str, list],
                   lengths: dict[str, list[int]], multiple: int, epochs: int, tested: bool,
                   startup_s: float, windows: dict[str, list[int] | None],
                   segments: dict[str, list[list[int]] | None]) -> dict[str, Any]:
    timer = StepTimer(module, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_points, eval_points, measured = [], [], {}
    for which, indices in pick(train_shapes, train_batches).items():
        batch = timer._batch([splits["train"][int(i)] for i in indices], collate)
        mask = batch["attention_mask"]
        rows = int(mask.any(-1).sum()) if mask.dim() == 3 else mask.shape[0]  # all-padding windows are skipped
        padded = tokens(window_groups([indices], lengths["train"], multiple, windows["train"], segments["train"])[0])
        seconds = timer.train_step(batch)
        eval_seconds = timer.eval_step(batch)
        train_points.append((padded, seconds))
        eval_points.append((padded / rows, eval_seconds / rows))  # per model input
        measured[which] = {"batch_size": len(indices), "inputs": rows, "padded_length": int(mask.shape[-1]),
                           "padded_tokens": padded,                           "train_step_s": round(seconds, 4), "eval_forward_s": round(eval_seconds, 4)}
        del batch
        gc.collect()
    train_time = linear_in_tokens(train_points)
    eval_time_per_doc = linear_in_tokens(eval_points)
    epoch_train_s = sum(train_time(tokens(groups)) for groups in train_shapes)

    def pass_s(split: str) -> float:
        shapes = window_groups(eval_plan[split], lengths[split], multiple, windows[split], segments[split])
        return sum(b * eval_time_per_doc(n) for groups in shapes for b, n in groups)

    validation_s = pass_s("validation") if "validation" in eval_plan else 0.0
    test_s = pass_s("test") if tested else 0.0
    # every epoch trains and validates; afterwards the best checkpoint is validated again, then tested
    run_s = startup_s + epochs * (epoch_train_s + validation_s) + validation_s + test_s
    peak = (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else peak_rss_mib()
    return {
        "measured": measured,
        "epoch_train_s": round(epoch_train_s, 1),
        "validation_pass_s": round(validation_s, 1),
        "test_pass_s": round(test_s, 1),
        "predicted_run_s": round(run_s, 1),
        "peak_memory_mib": round(peak, 1),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
    }


def print_report(report: dict[str, Any]) -> None:
    lines = [
        f"Estimate (reader={report['reader']}): {report['documents_per_epoch']} documents "
        f"({report['inputs_per_epoch']} model inputs), {report['batches_per_epoch']} batches, "
        f"{report['real_tokens_per_epoch']:,} tokens per epoch ({report['padded_tokens_per_epoch']:,} padded, "
        f"padding efficiency {report['padding_efficiency']:.1%}), {report['epochs']} epochs",
    ]
    for name, device in report["devices"].items():
        steps = ", ".join(f"{k} batch {v['inputs']}x{v['padded_length']}: {v['train_step_s']:.3f} s/step"
                          for k, v in device["measured"].items())
        lines.append(
            f"  {name}: {steps}; epoch {device['epoch_train_s']:.0f} s + validation {device['validation_pass_s']:.0f} s; "
            f"run {device['predicted_run_s']:.0f} s ({device['predicted_run_s'] / 60:.1f} min, startup "
            f"{report['startup_s']:.0f} s included); peak memory {device['peak_memory_mib']:.0f} MiB "
            f"({device['peak_memory_kind']})"
        )
    rank_zero_info("\n".join(lines))
    rank_zero_info("Estimate written to estimate.json: " + json.dumps({"predicted_run_s": report["predicted_run_s"]}))
