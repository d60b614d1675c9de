"""User-facing errors: one line naming the problem and the key or file to change."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A bad input or config. The CLI prints its message alone and exits with code 2."""


def full_traceback_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def missing_key(err: BaseException) -> str | None:
    """The config key of a ``???`` value that was read, found through wrapped exceptions too."""
    from omegaconf.errors import MissingMandatoryValue

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, MissingMandatoryValue):
            return str(getattr(seen, "full_key", "") or "") or None
        seen = seen.__cause__ or seen.__context__
    return None


def instantiation_error(err: BaseException) -> str | None:
    """One line for a config group that ``hydra.utils.instantiate`` could not build: an unknown key
    (``+data.max_lenght=512``) or an object that refused its values (``trainer=gpu`` without a GPU)."""
    from hydra.errors import InstantiationException

    if not isinstance(err, InstantiationException):
        return None
    if isinstance(err.__cause__, UserError):  # a constructor's own one-line check
        return str(err.__cause__)
    text = str(err)
    found_key = re.search(r"full_key: (\S+)", text)
    group = found_key.group(1) if found_key else "the config"
    unknown = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unknown:
        return f"{group}.{unknown.group(1)} is not a key of this {group} option; remove it or fix its spelling"
    lines = [line for line in text.splitlines()[1:] if line.strip() and not line.startswith("full_key")]
    cause = lines[0].strip() if lines else text.splitlines()[0]
    return f"cannot build {group} ({cause}); fix the {group} settings (python train.py --help lists the options)"


def exit_on_user_error(fn: F) -> F:
    """Turn a UserError into one line on stderr and exit code 2 (Hydra would print a traceback).

    A mandatory config value left at ``???`` (``data.train_file``, predict's ``input``/``output``)
    is a bad input too: one line naming the key instead of omegaconf's traceback.
    SystemExit is not an Exception, so Hydra's own error reporting lets it through untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if full_traceback_requested():
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as err:
            if full_traceback_requested():
                raise
            key = missing_key(err)
            if key is not None:
                message = f"{key} is required but not set; add {key}=... to the command"
            else:
                message = instantiation_error(err)
                if message is None:
                    raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
