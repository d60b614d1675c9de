"""Checks that run before Hydra composes anything, so a typo is one line, not a config dump."""

from __future__ import annotations

import sys
from pathlib import Path

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
        valid = sorted(p.stem for p in folder.glob("*.yaml"))
        for option in (o.strip() for o in value.split(",")):
            if option and option != "null" and option not in valid:
                return f"unknown {group} option '{option}'; set {group}= to one of {', '.join(valid)}"
    return None


def exit_on_unknown_group_option(conf_dir: Path) -> None:
    message = unknown_group_option(conf_dir, sys.argv[1:])
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
