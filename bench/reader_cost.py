"""What a reader costs per training epoch, estimated and measured, against ``sparse`` at the same length.

    PYTHONPATH=src python bench/reader_cost.py [--readers sparse_4096 chunks_4096 hierarchical_4096 truncate_512]
        [--dataset hyperpartisan] [--sample 12] [--rounds 2] [--out FILE] [-- TRAIN_OVERRIDES...]

Per reader, the run ``experiment=<dataset>_minilm`` with that reader is built in this process (data,
tokenizer, model: what ``train.py`` builds) and its epoch priced twice:
- ``estimate``: what ``estimate=true`` predicts for one training epoch (``epoch_train_s``: two measured
  step shapes, interpolated over the epoch's real batches);
- ``measured``: real training steps (forward, loss, backward, AdamW step) on a systematic sample of the
  epoch's batches (every k-th of the seeded, length-bucketed epoch), the mean step time times the
  number of batches. The readers take turns, ``--rounds`` times, so that load on the machine falls on
  all of them alike; the median over rounds is reported.
Goal (issue 28): chunks and hierarchical cost no more per epoch than sparse at the same length:
ratio to ``sparse_4096`` <= 1.0. Writes bench/results/reader_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from quality import READER_ROWS  # noqa: E402  (the quality bench's rows: one definition of each reader row)

#: the rows priced here (sparse_4096 is the experiment's block-sparse attention over 4,096 tokens)
READERS = {name: READER_ROWS[name] for name in
           ("sparse_4096", "chunks_4096", "hierarchical_4096", "hierarchical_4096_w256", "truncate_512")}


def build(dataset: str, overrides: list[str]) -> tuple[Any, Any, Any]:
    from hydra import compose, initialize_config_dir

    from bigbird_ft.runs.train import instantiate_run

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={dataset}_minilm", "paths.output_dir=.",
                                                      "data.drop_test_duplicates=true", *overrides])
    datamodule, module = instantiate_run(cfg)
    return cfg, datamodule, module


def main() -> None:
    import lightning as L
    import torch

    from bigbird_ft.training.estimate import StepTimer, estimate_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", nargs="+", choices=list(READERS), default=list(READERS))
    parser.add_argument("--dataset", default="hyperpartisan", choices=["hyperpartisan", "peps"])
    parser.add_argument("--sample", type=int, default=12, help="training batches timed per reader and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reader_cost.json")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    runs: dict[str, dict[str, Any]] = {}
    for name in args.readers:
        L.seed_everything(42)
        cfg, datamodule, module = build(args.dataset, [*READERS[name], *args.overrides])
        report = estimate_run(cfg, module, datamodule, Path(tempfile.mkdtemp(prefix=f"reader_cost_{name}_")), 0.0)
        batches = list(datamodule.train_dataloader().batch_sampler)
        step = max(len(batches) // args.sample, 1)
        sample = batches[::step][: args.sample]
        runs[name] = {"datamodule": datamodule, "module": module, "sample": sample, "batches": len(batches),
                      "estimate_epoch_s": report["devices"]["cpu"]["epoch_train_s"], "rounds": [],
                      "documents": report["documents_per_epoch"], "inputs": report["inputs_per_epoch"],
                      "command": "python train.py " + " ".join([f"experiment={args.dataset}_minilm", *READERS[name],
                                                               *args.overrides])}
        print(f"{name}: {len(batches)} batches, estimate {runs[name]['estimate_epoch_s']} s per epoch", flush=True)

    for round_index in range(args.rounds):
        for name, run in runs.items():
            timer = StepTimer(run["module"], torch.device("cpu"))
            collate = run["datamodule"].collator()
            train = run["datamodule"].tokenized["train"]
            seconds = [timer.train_step(timer._batch([train[int(i)] for i in batch], collate)) for batch in run["sample"]]
            run["rounds"].append(round(statistics.mean(seconds) * run["batches"], 1))
            print(f"round {round_index + 1} {name}: {run['rounds'][-1]} s per epoch (measured)", flush=True)

    results = {}
    base = args.readers[0]
    for name, run in runs.items():
        measured = statistics.median(run["rounds"])
        results[name] = {
            "documents_per_epoch": run["documents"], "inputs_per_epoch": run["inputs"], "batches_per_epoch": run["batches"],
            "estimate_epoch_s": run["estimate_epoch_s"], "measured_epoch_s": measured, "measured_rounds_s": run["rounds"],
            "command": run["command"],
        }
    for row in results.values():
        row[f"estimate_ratio_to_{base}"] = round(row["estimate_epoch_s"] / results[base]["estimate_epoch_s"], 3)
        row[f"measured_ratio_to_{base}"] = round(row["measured_epoch_s"] / results[base]["measured_epoch_s"], 3)
    report = {
        "command": " ".join(["PYTHONPATH=src python bench/reader_cost.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "dataset": args.dataset,
        "measured": time.strftime("%Y-%m-%d"),
        "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "goal": f"chunks and hierarchical: ratio to {base} <= 1.0",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| reader | documents | inputs | batches | estimate s/epoch | measured s/epoch | ratio (est.) | ratio (meas.) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['documents_per_epoch']} | {row['inputs_per_epoch']} | {row['batches_per_epoch']} | "
              f"{row['estimate_epoch_s']} | {row['measured_epoch_s']} | {row[f'estimate_ratio_to_{base}']} | "
              f"{row[f'measured_ratio_to_{base}']} |")


if __name__ == "__main__":
    main()
