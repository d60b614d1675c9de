"""Serve a trained model over HTTP: ``python serve.py run_dir=DIR [port=8000]`` (LitServe)."""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bigbird_ft.cli import check_command_line  # noqa: E402
from bigbird_ft.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from bigbird_ft.inference.serve import serve

    serve(cfg)


if __name__ == "__main__":
    check_command_line("serve")
    main()
