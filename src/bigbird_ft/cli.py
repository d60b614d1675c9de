"""Checks that run before Hydra composes anything, so a typo is one line, not a config dump."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import UserError

SKIPPED_PREFIXES = ("+", "~", "hydra.", "-")


def unknown_group_option(conf_dir: Path, argv: list[str]) -> str | None:
    """The first ``group=option`` override naming no ``conf/group/option.yaml``, as an error line.

    Hydra itself answers with a multi-line listing and exit code 1; users asked for one line that
    names the key and the valid choices.
    """
    for arg in argv:
        if "=" not in arg or arg.startswith(SKIPPED_PREFIXES):
            continue
        group, value = arg.split("=", 1)
        folder = conf_dir / group
        if not group or "." in group or not folder.is_dir():
            continue
        if value.startswith(("glob(", "choice(", "range(", "interval(")):
            continue
        valid = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))  # _base: shared keys
        for option in (o.strip() for o in value.split(",")):
            if option and option != "null" and option not in valid:
                return f"unknown {group} option '{option}'; set {group}= to one of {', '.join(valid)}"
    return None


def exit_on_unknown_group_option(conf_dir: Path) -> None:
    message = unknown_group_option(conf_dir, sys.argv[1:])
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def conf_dir() -> Path:
    """The project's ``conf/`` (train.py and predict.py set PROJECT_ROOT; the package sits in src/)."""
    root = os.environ.get("PROJECT_ROOT")
    return Path(root) / "conf" if root else Path(__file__).resolve().parents[2] / "conf"


def compose_tool(name: str, argv: list[str]) -> Any:
    """``conf/<name>.yaml`` composed with ``key=value`` overrides: the config of a small tool
    (export, convert) with train's and predict's command-line grammar, without a run dir.

    A key the tool does not have is one line naming it and the keys it has.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name=name):
        try:
            return compose(name, overrides=list(argv))
        except ConfigCompositionException as err:
            keys = ", ".join(OmegaConf.load(conf_dir() / f"{name}.yaml"))
            raise UserError(f"{err.args[0].splitlines()[0]} (python -m bigbird_ft.{name} takes {keys})") from None
