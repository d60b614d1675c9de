"""Predict with a trained model: ``python predict.py run_dir=DIR input=FILE output=FILE``."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bigbird_ft.cli import check_command_line  # noqa: E402
from bigbird_ft.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from bigbird_ft.inference.predict import predict

    predict(cfg)


if __name__ == "__main__":
    check_command_line("predict")
    main()
