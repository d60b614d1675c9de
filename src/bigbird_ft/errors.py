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


def exit_on_user_error(fn: F) -> F:
    """Turn a UserError into one line on stderr and exit code 2 (Hydra would print a traceback).

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

    return wrapper  # type: ignore[return-value]
