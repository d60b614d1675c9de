"""Every config file composes, and the parts instantiate."""

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import ROOT

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=["paths.output_dir=/tmp/x", *overrides])


GROUP_OPTIONS = [
    (group, option)
    for group in ("data", "model", "attention", "head", "optim", "trainer", "callbacks", "logger", "debug",
                  "experiment")
    for option in options(group)
    if group != "callbacks" or option in ("default", "early_stopping", "none")
]


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_resolves(group, option):
    extra = ["data.train_file=x.csv"] if option == "files" else []
    cfg = compose_train([f"{group}={option}", *extra])
    OmegaConf.resolve(cfg)
    assert cfg.attention.name in ("hf_full", "hf_block_sparse", "sdpa", "block_sparse", "flex")


def test_contract_keys_exist():
    cfg = compose_train([])
    for key in ("seed", "train", "test", "ckpt_path", "optimized_metric", "data.max_length", "data.batch_size",
                "data.num_workers", "data.pad_to_multiple_of", "data.bucket_by_length", "data.val_fraction",
                "model.pretrained", "model.tokenizer", "model.block_size", "model.num_random_blocks",
                "model.problem_type"):
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None or key in (
            "ckpt_path", "model.pretrained", "model.problem_type"), key
    assert cfg.data.pad_to_multiple_of == cfg.model.block_size


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_trainer_callbacks_and_loggers_instantiate(trainer, tmp_path):
    from bigbird_ft.config import instantiate_all

    cfg = compose_train([f"trainer={trainer}", f"paths.output_dir={tmp_path}", "callbacks=early_stopping"])
    callbacks = instantiate_all(cfg.callbacks)
    names = {type(c).__name__ for c in callbacks}
    assert names == {"ModelCheckpoint", "RichProgressBar", "LearningRateMonitor", "EarlyStopping"}
    loggers = instantiate_all(cfg.logger)
    built = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert built.max_epochs == cfg.trainer.max_epochs


def test_data_modules_instantiate(tmp_path):
    for option, extra in (("synthetic", []), ("files", [f"data.train_file={tmp_path / 'a.csv'}"])):
        cfg = compose_train([f"data={option}", *extra])
        dm = hydra.utils.instantiate(cfg.data)
        assert dm.pad_to_multiple_of == cfg.model.block_size


def test_every_yaml_is_valid():
    for path in Path(CONF).rglob("*.yaml"):
        OmegaConf.load(path)


def test_last_checkpoint_is_the_latest_state_even_when_the_last_epoch_did_not_improve(tmp_path):
    import lightning as L
    import torch

    class Worsening(L.LightningModule):
        """val/f1 falls every epoch, so only the first epoch is the best one."""

        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val/f1", -float(self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    cfg = compose_train([f"paths.output_dir={tmp_path}", "monitor=val/f1", "monitor_mode=max"])
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c and "checkpoint" in c._target_.lower()]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer = L.Trainer(max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(Worsening(), loader, loader)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert torch.load(folder / "epoch_000.ckpt", weights_only=False)["global_step"] == 2
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == trainer.global_step == 6
