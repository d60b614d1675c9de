"""Train a BigBird long-document classifier: ``python train.py [experiment=NAME] [key=value ...]``."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bigbird_ft.cli import check_command_line  # noqa: E402
from bigbird_ft.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    if cfg.get("task") is not None:  # the former spelling of python pretrain.py
        from bigbird_ft.runs.pretrain import pretrain_from_train_config

        return pretrain_from_train_config(cfg)
    from bigbird_ft.runs.train import train

    return train(cfg)


if __name__ == "__main__":
    check_command_line("train")
    main()
