"""Fast checks of the scale/tracking configs and helpers (no training)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from tests.conftest import ROOT


def compose_train(overrides: list[str], hydra_cfg: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra_cfg)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ],
)
def test_launchers_compose(launcher, target):
    cfg = compose_train([f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=4"], hydra_cfg=True)
    assert cfg.hydra.launcher._target_ == target
    assert cfg.trainer.strategy._target_ == "bigbird_ft.distributed.HydraDDPStrategy"


def test_optuna_search_space_and_ddp_cpu():
    cfg = compose_train(["hparams_search=optuna", "trainer=ddp_cpu"], hydra_cfg=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "head", "attention"}
    assert cfg.optimized_metric == "val/acc_best"
    assert (cfg.trainer.devices, cfg.trainer.strategy.process_group_backend) == (2, "gloo")


@pytest.mark.parametrize(
    ("logger", "names"),
    [("csv", {"csv"}), ("tensorboard", {"tensorboard"}), ("wandb", {"wandb"}),
     ("many", {"csv", "tensorboard", "wandb"})],
)
def test_logger_options(logger, names):
    cfg = compose_train([f"logger={logger}"])
    assert set(cfg.logger) == names
    if "wandb" in names:
        wandb = cfg.logger.wandb
        assert {"project", "name", "group", "tags", "log_model", "save_dir"} <= set(wandb)
        assert wandb.tags == cfg.tags


@pytest.mark.parametrize(
    ("debug", "key"),
    [("limit", "limit_train_batches"), ("overfit", "overfit_batches"), ("profiler", "profiler"), ("fdr", "fast_dev_run")],
)
def test_debug_options(debug, key):
    assert cfg_has(compose_train([f"debug={debug}"]).trainer, key)


def cfg_has(node, key: str) -> bool:
    return key in node and node[key] is not None


def test_ddp_child_command_reruns_only_this_job(tmp_path, monkeypatch):
    from bigbird_ft.distributed import hydra_job_command

    cfg = compose_train(["optim.lr=2e-3", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
                         f"hydra.runtime.output_dir={tmp_path / 'job'}"], hydra_cfg=True)
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr("sys.argv", [str(ROOT / "train.py"), "-m", "optim.lr=1e-3,2e-3"])
    command, cwd = hydra_job_command(1)
    args = command[2:]
    assert "-m" not in args and "optim.lr=1e-3,2e-3" not in args
    assert "optim.lr=2e-3" in args and "hparams_search=optuna" in args
    assert not any(a.startswith("hydra.sweeper") for a in args)
    assert f'hydra.run.dir="{tmp_path / "job"}"' in args
    assert {"hydra.mode=RUN", "hydra.output_subdir=null"} <= set(args)


def test_atomic_dir_second_writer_keeps_the_first_folder(tmp_path):
    from bigbird_ft.io_utils import atomic_dir

    target = tmp_path / "cache-key"
    with atomic_dir(target) as slow:
        (slow / "f").write_text("slow")
        with atomic_dir(target) as fast:
            (fast / "f").write_text("fast")
    assert (target / "f").read_text() == "fast"
    assert [p.name for p in tmp_path.iterdir()] == ["cache-key"]
    with atomic_dir(target) as again:  # a folder that existed before is replaced
        (again / "f").write_text("new")
    assert (target / "f").read_text() == "new"


def test_lightning_reaches_set_epoch_of_the_bucket_sampler():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    from bigbird_ft.data.sampler import LengthBucketBatchSampler

    sampler = LengthBucketBatchSampler(list(range(10, 90)), batch_size=4, seed=0)
    loader = DataLoader(list(range(80)), batch_sampler=sampler)
    first = list(sampler)
    _set_sampler_epoch(loader, 1)
    assert sampler.epoch == 1 and list(sampler) != first
