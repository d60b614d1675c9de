"""User-facing errors: one line naming the problem and the key or file to change."""

from __future__ import annotations

import functools
import os
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
            key = missing_key(err)
            if key is None or full_traceback_requested():
                raise
            print(f"error: {key} is required but not set; add {key}=... to the command", file=sys.stderr,
                  flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
