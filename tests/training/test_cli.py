"""The real entry points, run as a user runs them."""

import json

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.conftest import ROOT, SESSION_CACHE, run_script, tiny_overrides


def test_train_debug_fdr_writes_run_dir(tmp_path):
    result = run_script("train.py", ["debug=fdr", *tiny_overrides(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / ".hydra" / "config.yaml").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/acc", "val/f1", "test/acc", "test/f1"} <= set(metrics)
    # one validation batch of 8 documents: too few to fit a temperature, which stays 1 and says why
    assert metrics["val/temperature"] == 1.0 and metrics["val/temperature_reason"] == "too_few_documents"
    config = json.loads((run / "hf_model" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["east", "north", "south", "west"]
    assert f"Output dir: {run}" in result.stdout + result.stderr


CPU_TRAINABLE_BACKENDS = ["hf_full", "hf_block_sparse", "sdpa", "block_sparse"]
HEADS = ["cls", "mean", "max", "pooler", "attention"]


def fast_dev_run(tmp_path, head: str, attention: str) -> None:
    from bigbird_ft.runs.train import train

    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["debug=fdr", f"head={head}", f"attention={attention}", f"paths.output_dir={tmp_path / 'out'}",
                       *overrides],
        )
    value = train(cfg)
    assert 0.0 <= value <= 1.0
    assert (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("head", "attention"),
    [(h, "block_sparse") for h in HEADS] + [("cls", a) for a in CPU_TRAINABLE_BACKENDS if a != "block_sparse"],
)
def test_fast_dev_run_every_head_and_every_backend(tmp_path, head, attention):
    fast_dev_run(tmp_path, head, attention)


@pytest.mark.slow
@pytest.mark.parametrize("attention", CPU_TRAINABLE_BACKENDS)
@pytest.mark.parametrize("head", HEADS)
def test_fast_dev_run_every_head_by_every_backend(tmp_path, head, attention):
    fast_dev_run(tmp_path, head, attention)


def test_flex_training_on_cpu_stops_with_one_line(tmp_path):
    result = run_script("train.py", ["debug=fdr", "attention=flex", *tiny_overrides(tmp_path)])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "attention=" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_train_then_predict_round_trip_with_string_labels(tmp_path):
    result = run_script("train.py", tiny_overrides(tmp_path, **{"trainer.max_epochs": 2}))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert len(list((run / "checkpoints").glob("epoch_*.ckpt"))) == 1
    from omegaconf import OmegaConf

    from bigbird_ft.data.sources import SyntheticDataModule

    spec = SyntheticDataModule(spec=OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml").data.spec)).spec
    test_file = SESSION_CACHE["root"] / "generated" / f"synthetic-{spec.key()}" / "test.jsonl"
    for suffix in ("csv", "jsonl"):
        out = tmp_path / f"preds.{suffix}"
        pred = run_script("predict.py", [f"run_dir={run}", f"input={test_file}", f"output={out}",
                                         f"hydra.run.dir={tmp_path / 'pred'}"])
        assert pred.returncode == 0, pred.stderr[-3000:]
        frame = pd.read_csv(out) if suffix == "csv" else pd.read_json(out, lines=True)
        source = pd.read_json(test_file, lines=True)
        assert frame["id"].tolist() == source["id"].tolist()
        labels = {"east", "north", "south", "west"}
        assert set(frame["label"]) <= labels
        probs = frame[[f"prob_{name}" for name in sorted(labels)]]
        assert ((probs.sum(axis=1) - 1).abs() < 1e-5).all()
        assert (frame["score"] == probs.max(axis=1)).all()


def test_own_csv_with_odd_columns_trains_and_predicts(tmp_path):
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec

    corpus = SyntheticCorpus(SyntheticSpec(min_words=40, max_words=200))
    rows = corpus.split("train", 60)
    frame = pd.DataFrame({
        "doc_id": [f"d{i}" for i in range(len(rows))],
        "Headline": [r["text"][:30] for r in rows],
        "Body Text": [r["text"] for r in rows],
        "Verdict": [r["label"].upper() for r in rows],
    })
    train_csv = tmp_path / "mine.csv"
    frame.to_csv(train_csv, index=False)
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", [
        "data=files", f"data.train_file={train_csv}", "data.text_column=[Headline,Body Text]",
        "data.label_column=Verdict", "test=false", "optimized_metric=val/f1_best", *overrides,
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "hf_model" / "config.json").read_text())
    assert sorted(config["label2id"]) == ["EAST", "NORTH", "SOUTH", "WEST"]
    out = tmp_path / "out.csv"
    pred = run_script("predict.py", [f"run_dir={tmp_path / 'run'}", f"input={train_csv}", f"output={out}",
                                     "id_column=doc_id", f"hydra.run.dir={tmp_path / 'pred'}"])
    assert pred.returncode == 0, pred.stderr[-3000:]
    preds = pd.read_csv(out)
    assert preds["id"].tolist() == frame["doc_id"].tolist()
    assert set(preds["label"]) <= {"EAST", "NORTH", "SOUTH", "WEST"}


@pytest.mark.slow
def test_multirun_heads_by_backends(tmp_path):
    result = run_script("train.py", [
        "-m", "head=cls,mean,pooler", "attention=hf_full,hf_block_sparse", "debug=fdr",
        *[o for o in tiny_overrides(tmp_path) if not o.startswith("hydra.run")],
    ], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "multirun").glob("*/metrics.json"))
    assert len(jobs) == 6
    combos = set()
    for job in jobs:
        chosen = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        combos.add((chosen["head"], chosen["attention"]))
    assert combos == {(h, a) for h in ("cls", "mean", "pooler") for a in ("hf_full", "hf_block_sparse")}
