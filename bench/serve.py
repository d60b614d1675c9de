"""Served throughput and latency, side by side with predict's loop over the same documents.

    PYTHONPATH=src python bench/serve.py [--rows default minilm_512 minilm_4096] [--docs 64]
        [--requests 96] [--long-requests 1000] [--max-seconds 300] [--workers N] [--out bench/results/serve.json]

Rows (each a checkpoint trained for two batches here: serving speed does not depend on the weights):
- ``default``: ``python train.py``'s model (bigbird_tiny, block-sparse, 1,024 tokens);
- ``minilm_512`` / ``minilm_4096``: what ``data=files`` gives a user's CSV (minilm_l6, head=mean), at
  ``data.max_length`` 512 / 4,096.

Documents: the first ``--docs`` articles of Hyperpartisan's test split (../shared/data; real lengths,
median ~540 tokens). Per row, in one run on this machine:
- ``predict``: documents/s of predict's loop (``Predictor`` with its Trainer, the model loaded: what
  ``predict.py`` spends after start-up) and of the whole ``predict.py`` process (start-up included);
- ``serve``: ``serve.py`` started on a free loopback port (max_batch_size 8, batch_timeout 0.01),
  then for 1, 8 and 32 concurrent clients (threads, one document per request, documents in turn):
  requests/s, p50/p95 latency, failures; ``--requests`` requests per level (``--max-seconds`` caps each).
  Then ``--long-requests`` requests with 32 clients (rows with ``long`` in ``--long-rows``): failures,
  and the server's memory (RSS summed over its processes) before and after.
- ``--workers N`` (instead of the above; written to another ``--out``): the served levels with 1 worker, with N
  workers that share the cores (serve.py gives each cores // N torch threads) and with N workers that each
  keep torch's full pool (``OMP_NUM_THREADS`` = cores, what serve.py did before the share).
The client threads run on the same 2 cores as the server; the ratio serve/predict is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
PYTHON = sys.executable
ROWS: dict[str, list[str]] = {
    "default": ["data.max_length=1024"],
    "minilm_512": ["data=files", "data.max_length=512"],
    "minilm_4096": ["data=files", "data.max_length=4096"],
}
CLIENTS = (1, 8, 32)


def documents(n: int) -> tuple[list[str], list[str], list[str]]:
    """Test texts to serve, and 16 training texts with labels for the two-batch checkpoints."""
    from quality import raw_splits

    raw, _ = raw_splits("hyperpartisan")
    train = raw["train"].select(range(16))
    return list(raw["test"]["text"][:n]), list(train["text"]), [str(x) for x in train["label"]]


def train_row(row: str, work: Path, train_texts: list[str], train_labels: list[str]) -> Path:
    import pandas as pd

    csv = work / "train.csv"
    pd.DataFrame({"text": train_texts, "label": train_labels}).to_csv(csv, index=False)
    data = [f"data.train_file={csv}", "data.batch_size=4"] if "data=files" in ROWS[row] else []
    command = [PYTHON, str(ROOT / "train.py"), *ROWS[row], *data, "trainer.max_epochs=1",
               "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false", "export=false",
               "callbacks.rich_progress_bar=null", f"hydra.run.dir={work / row}", f"paths.log_dir={work / 'logs'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if result.returncode != 0:
        sys.exit(f"{row}: training failed:\n{result.stderr[-2000:]}")
    return work / row


def predict_rate(run_dir: Path, texts: list[str], work: Path) -> dict[str, float]:
    """predict's loop in this process (model loaded, timed over the documents), and predict.py whole."""
    import pandas as pd

    from bigbird_ft.inference.predict import Predictor
    from bigbird_ft.models.checkpoints import find_checkpoint
    from bigbird_ft.models.factory import load_classifier

    module = load_classifier(find_checkpoint(str(run_dir), None))
    predictor = Predictor(module, module.inputs.replace(text_columns="text"), trainer={"accelerator": "cpu"})
    predictor.predict(pd.DataFrame({"text": texts[:8]}), "warm-up")
    start = time.perf_counter()
    predictor.predict(pd.DataFrame({"text": texts}), "the documents")
    loop_s = time.perf_counter() - start
    source, out = work / "docs.jsonl", work / "preds.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    start = time.perf_counter()
    result = subprocess.run([PYTHON, str(ROOT / "predict.py"), f"run_dir={run_dir}", f"input={source}",
                             f"output={out}", "accelerator=cpu", f"hydra.run.dir={work / 'predict'}"],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    process_s = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"predict.py failed:\n{result.stderr[-2000:]}")
    return {"loop_docs_per_s": round(len(texts) / loop_s, 2), "loop_s": round(loop_s, 2),
            "process_docs_per_s": round(len(texts) / process_s, 2), "process_s": round(process_s, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group_rss_mib(pgid: int) -> float:
    out = subprocess.run(["ps", "-o", "rss=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return round(sum(int(x) for x in out.split()) / 1024, 1)


def post(url: str, text: str) -> tuple[bool, float]:
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            ok = response.status == 200 and "label" in json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        ok = False
    return ok, time.perf_counter() - start


def load(url: str, texts: list[str], clients: int, requests: int, max_seconds: float) -> dict[str, Any]:
    """``requests`` requests from ``clients`` threads (each waits for its answer before the next)."""
    deadline = time.monotonic() + max_seconds
    results: list[tuple[bool, float]] = []

    def client(index: int) -> None:
        for i in range(index, requests, clients):
            if time.monotonic() > deadline:
                return
            results.append(post(url, texts[i % len(texts)]))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    latencies = sorted(latency for _, latency in results)
    return {"clients": clients, "requests": len(results), "failed": sum(not ok for ok, _ in results),
            "requests_per_s": round(len(results) / wall, 2), "wall_s": round(wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[max(0, int(0.95 * len(latencies)) - 1)], 1)}


def serve_row(run_dir: Path, texts: list[str], args: argparse.Namespace, long: bool, work: Path,
              workers: int = 1, env: dict[str, str] | None = None) -> dict[str, Any]:
    port = free_port()
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen([PYTHON, str(ROOT / "serve.py"), f"run_dir={run_dir}", f"port={port}", "accelerator=cpu",
                             "max_batch_size=8", "batch_timeout=0.01", f"workers={workers}",
                             f"hydra.run.dir={work / 'serve'}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    url, started = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while True:
            if proc.poll() is not None or time.monotonic() - started > 300:
                sys.exit("serve.py did not become ready:\n" + (work / "serve.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        ready_s = time.monotonic() - started
        load(url + "/predict", texts, 8, 16, args.max_seconds)  # warm-up
        levels = [load(url + "/predict", texts, c, args.requests, args.max_seconds) for c in CLIENTS]
        out: dict[str, Any] = {"ready_s": round(ready_s, 1), "levels": levels}
        if long:
            before = group_rss_mib(proc.pid)
            run = load(url + "/predict", texts, 32, args.long_requests, args.long_max_seconds)
            after = group_rss_mib(proc.pid)
            out["long_run"] = {**run, "rss_before_mib": before, "rss_after_mib": after,
                               "rss_change": round(after / before - 1, 4)}
        return out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def compare_workers(run_dir: Path, texts: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One worker, then ``--workers`` N sharing the cores, then N each with torch's full pool, side by side."""
    cores = os.cpu_count() or 1
    one, shared, full = "1_worker", f"{args.workers}_workers_shared_threads", f"{args.workers}_workers_full_pools"
    setups = {one: (1, {}), shared: (args.workers, {}), full: (args.workers, {"OMP_NUM_THREADS": str(cores)})}
    served = {name: serve_row(run_dir, texts, args, False, work, workers, env)["levels"]
              for name, (workers, env) in setups.items()}
    at8 = {name: next(level for level in levels if level["clients"] == 8)["requests_per_s"]
           for name, levels in served.items()}
    return {"cores": cores, "serve": served,
            "shared_over_full_pools_at_8_clients": round(at8[shared] / at8[full], 3),
            "shared_over_1_worker_at_8_clients": round(at8[shared] / at8[one], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--long-rows", nargs="*", default=["default", "minilm_512"])
    parser.add_argument("--long-requests", type=int, default=1000)
    parser.add_argument("--long-max-seconds", type=float, default=900)
    parser.add_argument("--workers", type=int, default=None,
                        help="instead: serve each row with 1 worker, then N workers sharing the cores (serve.py's "
                             "default), then N workers each with a full thread pool (OMP_NUM_THREADS=cores)")
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()
    texts, train_texts, train_labels = documents(args.docs)
    payload = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    results = payload.get("results", {})
    # rows merge from separate runs: each row keeps the command that measured it
    command = "PYTHONPATH=src python " + " ".join(["bench/serve.py", *sys.argv[1:]])
    for row in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            load_before = os.getloadavg()[0]
            run_dir = train_row(row, work, train_texts, train_labels)
            if args.workers:
                results[row] = {"command": command, "overrides": ROWS[row], "documents": len(texts),
                                **compare_workers(run_dir, texts, args, work),
                                "load_average_1min": {"before": round(load_before, 2),
                                                      "after": round(os.getloadavg()[0], 2)}}
                print(json.dumps({row: results[row]}, indent=1), flush=True)
                continue
            predict = predict_rate(run_dir, texts, work)
            served = serve_row(run_dir, texts, args, row in args.long_rows, work)
            at8 = next(level for level in served["levels"] if level["clients"] == 8)
            results[row] = {"command": command, "overrides": ROWS[row], "documents": len(texts), "predict": predict,
                            "serve": served,
                            "serve8_over_predict_loop": round(at8["requests_per_s"] / predict["loop_docs_per_s"], 3),
                            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}
            print(json.dumps({row: results[row]}, indent=1), flush=True)
    commands = [c for c in payload.pop("commands", [payload.pop("command", None)]) if c and c != command]
    payload.update({"commands": [*commands, command],
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
                    "measured": time.strftime("%Y-%m-%d"), "results": results})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
