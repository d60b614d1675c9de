"""Multirun: basic sweeps, experiment globs, Optuna (also with DDP and offline W&B)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_script, tiny_overrides
from tests.scale_helpers import assert_ranks_exited_cleanly, wandb_run_contents


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def job_value(job: Path, key: str) -> object:
    node: object = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    for part in key.split("."):
        node = node[part]  # type: ignore[index]
    return node


@pytest.mark.slow
def test_multirun_over_two_learning_rates_with_the_joblib_launcher(tmp_path):
    result = run_script("train.py", ["-m", "optim.lr=1e-3,2e-3", "debug=fdr", "hydra/launcher=joblib",
                                     "hydra.launcher.n_jobs=2", *tiny_overrides(tmp_path)])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    jobs = job_dirs(tmp_path / "multirun")
    assert [job_value(j, "optim.lr") for j in jobs] == [1e-3, 2e-3]
    assert all((j / "metrics.json").exists() for j in jobs)


@pytest.mark.slow
def test_multirun_over_every_offline_experiment(tmp_path):
    from tests.conftest import shared_path

    shared_path("data/hyperpartisan")  # the *_tiny experiments read ../shared
    # hyperpartisan_base needs the hub weights: not offline-runnable; ner_longrange trains in
    # test_token_classification and qa_longrange in test_question_answering (other problem types: their own
    # assertions, and their full-size generated corpora would be built here for one batch). data.spec exists only in
    # data=synthetic, so the synthetic-only shrinking overrides are left out here.
    # model.config.* keys exist only in the random-init model yaml: ++ adds them where missing
    # (a pretrained model applies only dropout keys, so the converted MiniLM ignores them)
    overrides = [f"++{o}" if o.startswith("model.config.") else o
                 for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", ["-m", "experiment=glob(*,exclude=[hyperpartisan_base,ner_longrange,qa_longrange])", "debug=fdr",
                                     *overrides], timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = job_dirs(tmp_path / "multirun")
    ran = {o for j in jobs for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())
           if o.startswith("experiment=")}
    assert ran == {"experiment=longrange", "experiment=hyperpartisan_tiny", "experiment=peps_tiny",
                   "experiment=hyperpartisan_minilm", "experiment=peps_minilm"}
    assert all((j / "metrics.json").exists() for j in jobs)


@pytest.mark.slow
def test_optuna_three_trials(tmp_path):
    result = run_script("train.py", ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "debug=fdr",
                                     *tiny_overrides(tmp_path)])
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = job_dirs(tmp_path / "multirun")
    assert len(jobs) == 3
    assert all((j / "metrics.json").exists() for j in jobs)
    best = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert {"optim.lr", "head", "attention"} <= set(best["best_params"])
    values = [json.loads((j / "metrics.json").read_text())["val/acc_best"] for j in jobs]
    assert best["best_value"] == pytest.approx(max(values))


@pytest.mark.slow
def test_optuna_with_ddp_and_offline_wandb(tmp_path):
    overrides = tiny_overrides(tmp_path, **{"trainer.max_epochs": 1, "test": "false", "export": "false"})
    result = run_script(
        "train.py",
        ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer=ddp_cpu", "logger=wandb",
         "debug=limit", *overrides],
        env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "wandb-home")},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert_ranks_exited_cleanly(result)
    jobs = job_dirs(tmp_path / "multirun")
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "metrics.json").exists()
        assert (job / "train_rank1.log").exists()  # rank 1 of this job ran in this job's dir
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        # wandb-core keeps an offline run's config and history in its run-<id>.wandb log
        config, history = wandb_run_contents(next(runs[0].glob("run-*.wandb")))
        assert config["optim"]["lr"] == job_value(job, "optim.lr")
        assert config["trainer"]["strategy"]["process_group_backend"] == "gloo"
        assert config["tags"] == ["longrange", "synthetic"]
        val_rows = [row for row in history if "val/acc" in row]
        assert val_rows and all(0.0 <= row["val/acc"] <= 1.0 for row in val_rows)
        assert any("train/loss_step" in row for row in history)
