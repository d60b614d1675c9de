"""The bench scripts run on CPU from a clean checkout and write their JSON (tiny settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SESSION_CACHE, shared_path


def run_bench(script: str, args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow
def test_overhead_bench_times_all_four_trainers(tmp_path):
    out = tmp_path / "overhead.json"
    result = run_bench("overhead.py", ["--steps", "6", "--warmup", "2", "--rounds", "1", "--length", "256",
                                       "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"ours", "plain_ours", "plain_hf", "hf_trainer"}
    for variant in report["variants"].values():
        assert variant["step_ms"] > 0 and variant["peak_rss_mib"] > 0
    assert report["ratios"]["ours / plain_ours (time)"] > 0


@pytest.mark.slow
def test_quality_bench_rows_have_seeds_and_error_bars(tmp_path: Path):
    shared_path("data/hyperpartisan")
    out = tmp_path / "quality.json"
    cache = SESSION_CACHE.get("root", tmp_path) / "cache"
    result = run_bench("quality.py", ["--datasets", "hyperpartisan", "--rows", "tfidf", "truncate_512", "--seeds", "1",
                                      "2", "--limit", "48", "--workdir", str(tmp_path / "work"), "--out", str(out), "--",
                                      "debug=limit", "trainer.max_epochs=1", "reader.window=128", f"paths.cache_dir={cache}"])
    assert result.returncode == 0, result.stderr[-4000:]
    rows = json.loads(out.read_text())["results"]["hyperpartisan"]
    assert set(rows) == {"tfidf", "truncate_512"}
    for row in rows.values():
        assert row["seeds"] == [1, 2] and [r["seed"] for r in row["per_seed"]] == [1, 2]
        for key in ("test/acc", "test/f1"):
            lo, hi = row[f"{key}_ci95"]
            assert 0.0 <= lo <= row[key] <= hi <= 1.0
    assert rows["truncate_512"]["reader"] == "truncate" and rows["truncate_512"]["splits"]["test"] == 48
    assert "experiment=hyperpartisan_minilm reader=truncate" in rows["truncate_512"]["train_command"]
    # --merge keeps earlier rows; a finished seed is read back, not trained again
    result = run_bench("quality.py", ["--datasets", "hyperpartisan", "--rows", "truncate_512", "--seeds", "1", "--limit",
                                      "48", "--merge", "--workdir", str(tmp_path / "work"), "--out", str(out), "--",
                                      "debug=limit", "trainer.max_epochs=1", "reader.window=128", f"paths.cache_dir={cache}"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "seed 1: read back" in result.stdout
    merged = json.loads(out.read_text())
    assert set(merged["results"]["hyperpartisan"]) == {"tfidf", "truncate_512"} and len(merged["commands"]) == 2


@pytest.mark.slow
def test_attention_bench_bf16_reports_tokens_per_second(tmp_path):
    out = tmp_path / "attention.json"
    result = run_bench("attention.py", ["--backends", "block_sparse", "--lengths", "1024", "--steps", "1",
                                        "--precision", "bf16", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    row = json.loads(out.read_text())["results"][0]
    assert row["precision"] == "bf16" and row["tokens_per_s"] > 0


@pytest.mark.slow
def test_default_run_bench_reports_seeds_truncation_and_heads(tmp_path):
    from tests.conftest import tiny_overrides

    out = tmp_path / "default_run.json"
    shrink = [o for o in tiny_overrides(tmp_path) if not o.startswith(("hydra.run.dir", "data.max_length"))]
    result = run_bench("default_run.py", ["--seeds", "7", "--short-seeds", "7", "--short-length", "64",
                                          "--compare-heads", "max", "--workdir", str(tmp_path / "work"),
                                          "--out", str(out), "--", "data.max_length=512", *shrink])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    run = report["max_length_512"]["runs"][0]
    assert run["seed"] == 7 and run["epochs"] == 1 and len(run["val_acc_per_epoch"]) == 1
    assert 0.0 <= run["test_acc"] <= 1.0 and run["wall_s"] > 0
    assert "data.max_length=64" in report["max_length_64"]["runs"][0]["command"]
    heads = report["heads_same_seed"]
    assert set(heads) == {"attention", "max"}
    # attention pooling passes gradient to every token; max pooling to one token per feature
    assert heads["attention"]["evidence_reach_at_init"] == 1.0
    assert 0.0 <= heads["max"]["evidence_reach_at_init"] < 0.5
    # --reparse re-reads the run dirs and keeps the wall times
    result = run_bench("default_run.py", ["--reparse", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(out.read_text())["max_length_512"]["runs"][0]["wall_s"] == run["wall_s"]


@pytest.mark.slow
def test_data_cache_and_padding_benches_write_their_json(tmp_path):
    shared_path("data/hyperpartisan")
    shared_path("tokenizers/bigbird-roberta-base/spiece.model")
    out = tmp_path / "data_cache.json"
    result = run_bench("data_cache.py", ["--max-length", "512", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["first"]["train_rows"] == report["second"]["train_rows"] > 500
    # the second setup reads the token cache the first one wrote
    assert report["second"]["setup_s"] < report["first"]["setup_s"]
    assert "bench/data_cache.py --max-length 512" in report["command"] and "before" in report["load_avg_1min"]
    out = tmp_path / "padding.json"
    result = run_bench("padding.py", ["--max-batches", "1", "--threads", "1", "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.returncode == 0, result.stderr[-4000:]
    strategies = json.loads(out.read_text())["strategies"]
    efficiency = {name: row["pad_efficiency"] for name, row in strategies.items()}
    # bucketing pads less than dynamic padding, which pads less than padding every row to max_length
    assert efficiency["pad_to_max_length"] < efficiency["dynamic"] < efficiency["dynamic_bucketed"] <= 1.0


@pytest.mark.slow
def test_attention_bench_profile_names_the_top_ops(tmp_path):
    out = tmp_path / "profile.json"
    result = run_bench("attention.py", ["--backends", "block_sparse", "--lengths", "1024", "--steps", "1",
                                        "--preset", "longrange", "--profile", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    profile = json.loads(out.read_text())["results"][0]["profile"]
    ops = profile["top_ops"]
    assert len(ops) == 15 and all(op["self_cpu_s"] >= 0 for op in ops)
    assert sum(op["self_cpu_s"] for op in ops) <= profile["self_cpu_total_s"] + 1e-6


@pytest.mark.slow
def test_calibration_estimate_and_evidence_benches_write_their_json(tmp_path):
    from tests.conftest import tiny_overrides

    shrink = [o for o in tiny_overrides(tmp_path) if not o.startswith("hydra.run.dir")]
    out = tmp_path / "calibration.json"
    result = run_bench("calibration.py", ["--runs", "default", "--out", str(out), "--", *shrink])
    assert result.returncode == 0, result.stderr[-4000:]
    row = json.loads(out.read_text())["runs"]["default"]
    assert row["test_ece_ratio"] == pytest.approx(row["test_ece"] / row["test_ece_uncalibrated"], abs=1e-3)
    assert row["temperature"] > 0 and 0 <= row["test_acc"] <= 1

    out = tmp_path / "estimate.json"
    result = run_bench("estimate.py", ["--runs", "default", "--out", str(out), "--", *shrink])
    assert result.returncode == 0, result.stderr[-4000:]
    row = json.loads(out.read_text())["runs"]["default"]
    assert row["relative_error"] == pytest.approx(
        (row["predicted_run_s"] - row["measured_run_s"]) / row["measured_run_s"], abs=1e-3)
    assert row["estimate"]["batches_per_epoch"] == 6

    run = tmp_path / "trained"
    trained = subprocess.run([sys.executable, "train.py", *shrink, f"hydra.run.dir={run}", "test=false"],
                             cwd=ROOT, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "evidence.json"
    result = run_bench("evidence.py", ["--run-dir", str(run), "--limit", "6", "--k", "2", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["documents"] == 6 and set(report["methods"]) == {"auto", "gradient"}
    for method in report["methods"].values():
        assert method["top1_hit_rate"] is None or 0 <= method["top1_hit_rate"] <= 1
        assert {"comprehensiveness_top_k", "comprehensiveness_random"} <= set(method)


@pytest.mark.slow
def test_compile_bench_reports_speedup_and_compile_time(tmp_path):
    out = tmp_path / "compile.json"
    result = run_bench("compile.py", ["--backends", "sdpa", "--length", "128", "--steps", "1", "--hidden", "64",
                                      "--layers", "1", "--block", "16", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    row = json.loads(out.read_text())["backends"]["sdpa"]
    # the speedup is rounded to 3 decimals: at a small ratio (0.025 once, on a loaded machine) that alone is > 1 %
    assert row["train_speedup"] == pytest.approx(
        row["eager"]["train_step_s"] / row["compiled"]["train_step_s"], rel=1e-2, abs=1e-3)
    assert row["compiled"]["first_train_step_s"] > row["compiled"]["train_step_s"]


@pytest.mark.slow
def test_gpu_bench_dry_run_fills_every_part(tmp_path):
    """bench/gpu.py --dry-run: the script a lent GPU runs, end to end on CPU at tiny shapes."""
    out = tmp_path / "gpu.json"
    result = run_bench("gpu.py", ["--dry-run", "--budget", "400", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["total_s"] <= 400
    parts = report["parts"]
    assert set(parts) == {"attention", "train_tokens_per_s", "overhead", "compile"}
    for row in parts["attention"]["results"]:
        assert row["median_s"] > 0 and 0 < row["roofline_fraction"] < 1.5, row
    for row in parts["train_tokens_per_s"]["results"].values():
        assert row["tokens_per_s"] > 0, row
    assert parts["overhead"]["result"]["ratios"]["ours / hf_trainer (time)"] > 0
    assert parts["compile"]["result"]["backends"]["block_sparse"]["train_speedup"] > 0


def test_gpu_bench_refuses_without_cuda_unless_dry_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real run would start")
    result = run_bench("gpu.py", ["--out", str(tmp_path / "gpu.json")], timeout=120)
    assert result.returncode != 0 and "--dry-run" in result.stderr
    assert not (tmp_path / "gpu.json").exists()
