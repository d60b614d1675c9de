"""Checks that run before Hydra composes anything, so a typo is one line, not a config dump."""

from __future__ import annotations

import logging
import os
import re
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

    exit_on_help(name, argv)
    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name=name):
        try:
            return compose(name, overrides=list(argv))
        except ConfigCompositionException as err:
            keys = ", ".join(OmegaConf.load(conf_dir() / f"{name}.yaml"))
            raise UserError(f"{err.args[0].splitlines()[0]} (python -m bigbird_ft.{name} takes {keys})") from None


#: ``key: value  # what it is`` at the top level of a yaml file (comments are the documentation)
KEY_LINE = re.compile(r"^([A-Za-z_][\w]*):\s*(.*?)\s*(?:#\s*(.*))?$")
#: ``  - group: option  # what it is`` in a defaults list
GROUP_LINE = re.compile(r"^\s+-\s+([A-Za-z_][\w/]*):\s*(\S+)\s*(?:#\s*(.*))?$")
HELP_FLAGS = ("--help", "-h")
#: groups that hold the project's plumbing (folders, Hydra's run dir), not a user's choice
INTERNAL_GROUPS = ("paths", "hydra")


def documented_keys(path: Path) -> tuple[list[str], list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """(the file's leading comment lines, its top-level (key, value, comment), its defaults-list
    (group, option, comment)), read as text: the comments are what a yaml parser throws away."""
    header, keys, groups = [], [], []
    in_defaults, node = False, None
    for line in path.read_text().splitlines():
        if line.startswith("#") and not keys and not groups:
            header.append(line.lstrip("# ").rstrip())
            continue
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        group = GROUP_LINE.match(line) if in_defaults else None
        if group and group.group(1) != "override":
            groups.append((group.group(1), group.group(2), group.group(3) or ""))
            continue
        key = KEY_LINE.match(line)
        child = KEY_LINE.match(line[2:]) if node and line.startswith("  ") and not line.startswith("   ") else None
        if key:
            in_defaults = False
            node = key.group(1) if not key.group(2) else None  # a node: its keys follow, indented
            if node is None:
                keys.append((key.group(1), key.group(2), key.group(3) or ""))
        elif child:
            keys.append((f"{node}.{child.group(1)}", child.group(2), child.group(3) or ""))
    return header, keys, groups


def help_text(name: str, conf: Path | None = None) -> str:
    """``--help`` of an entry point: its usage, config groups (train) and keys, each with one line.

    Hydra's own help lists every group of the config folder, so predict's listed train's groups
    (which it then refuses); this reads the entry point's own file.
    """
    conf = conf or conf_dir()
    header, keys, groups = documented_keys(conf / f"{name}.yaml")
    lines = [*header, ""]
    if any(group not in INTERNAL_GROUPS for group, _, _ in groups):
        lines.append("Config groups (GROUP=OPTION; the default is marked *):")
        for group, default, comment in groups:
            if group in INTERNAL_GROUPS:
                continue
            folder = conf / group
            options = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
            listed = " | ".join(f"{o}*" if o == default else o for o in options)
            lines.append(f"  {group:<15} {listed}")
            if comment:
                lines.append(f"  {'':<15}   {comment}")
        lines.append("")
    width = max((len(f"{k}={v}") for k, v, _ in keys), default=0)
    lines.append("Keys (key=value):")
    for key, value, comment in keys:
        lines.append(f"  {f'{key}={value}':<{min(width, 40)}}  {comment}".rstrip())
    if any(group not in INTERNAL_GROUPS for group, _, _ in groups):
        lines += ["", "Each group's keys: add --cfg job to a command to print the whole composed config;",
                  "set one with GROUP.KEY=VALUE (e.g. data.max_length=512)."]
    return "\n".join(lines)


def exit_on_help(name: str, argv: list[str] | None = None) -> None:
    """Print ``help_text(name)`` and exit 0 when ``--help`` or ``-h`` is among the arguments."""
    if any(arg in HELP_FLAGS for arg in (sys.argv[1:] if argv is None else argv)):
        print(help_text(name))
        sys.exit(0)


def flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Every leaf key path of a composed config (``data.max_length``, ...)."""
    from omegaconf import DictConfig

    keys = []
    for key in node.keys() if isinstance(node, DictConfig) else []:
        path = f"{prefix}{key}"
        child = node._get_node(key)
        keys += flat_keys(child, f"{path}.") if isinstance(child, DictConfig) else [path]
    return keys


def owner_option(conf: Path, key: str) -> str | None:
    """``data.train_file`` -> ``data=files``: the option of the key's group whose yaml defines the key."""
    group, _, leaf = key.partition(".")
    folder = conf / group
    if not leaf or "." in leaf or not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.yaml")):
        if not path.stem.startswith("_") and any(k == leaf for k, _, _ in documented_keys(path)[1]):
            return f"{group}={path.stem}"
    return None


def bad_override(name: str, argv: list[str], conf: Path | None = None) -> str | None:
    """The command's overrides composed once before Hydra runs: an unknown key or an unreadable value
    is one line with the likely fix (Hydra's answer is several lines that suggest ``+key``, which then
    fails later)."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, OverrideParseException

    conf = conf or conf_dir()
    if any(arg in ("-m", "--multirun") for arg in argv):
        return None  # sweeps: Hydra expands them; each job is checked as it runs
    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        with initialize_config_dir(str(conf), version_base="1.3", job_name=name):
            compose(name, overrides=overrides)
        return None
    except OverrideParseException as err:
        shown = str(err).splitlines()[0].split(": ", 1)[-1]
        return (f"cannot read the override {shown}: quote a value with special characters (e.g. "
                f"'data.train_file=\"~/my file.csv\"'), or write $HOME instead of ~")
    except ConfigCompositionException as err:
        found = re.match(r"Could not override '([^']+)'", str(err))
        if not found:
            return str(err).splitlines()[0]
        key = found.group(1)
        owner = owner_option(conf, key)
        if owner:
            return f"{key} is a key of {owner}; add {owner} to the command"
        try:
            with initialize_config_dir(str(conf), version_base="1.3", job_name=name):
                known = flat_keys(compose(name, overrides=[o for o in overrides if not o.startswith(f"{key}=")]))
        except Exception:  # noqa: BLE001  (another bad override: name the first one only)
            known = []
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"see python {name}.py --help"
        return f"unknown key {key}; {hint}"


def exit_on_bad_override(name: str) -> None:
    message = bad_override(name, sys.argv[1:])
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def check_command_line(name: str) -> None:
    """What an entry point checks before Hydra runs: ``--help``, group options, keys and values."""
    exit_on_help(name)
    exit_on_unknown_group_option(conf_dir())
    exit_on_bad_override(name)


def route_lightning_logs_to_hydra() -> None:
    """Lightning adds its own console handler; under Hydra every line would print twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
