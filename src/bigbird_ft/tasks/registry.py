"""Name -> task; the rule that infers a task from the training labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from .base import WEIGHT_KEY_OWNERS, Task

_TASKS: dict[str, Task] = {}
#: a checkpoint or hf_model/ that names no problem type was trained on one class per document
DEFAULT_TASK = "single_label_classification"


def register_task(cls: type[Task]) -> type[Task]:
    _TASKS[cls.name] = cls()
    if cls.weight_key:
        WEIGHT_KEY_OWNERS.setdefault(cls.weight_key, []).append(cls.name)
    return cls


def default_task(per_token: bool, pair_input: bool = False) -> str:
    """The task of a model whose config names none (an exported ``hf_model/``): its head decides."""
    if not per_token:
        return DEFAULT_TASK
    return next(name for name, task in _TASKS.items() if task.per_token and task.pair_input == pair_input)


def available_tasks() -> list[str]:
    return list(_TASKS)


def task_for(name: str) -> Task:
    if name not in _TASKS:
        raise UserError(f"unknown model.problem_type '{name}'; use one of {', '.join(available_tasks())} or null")
    return _TASKS[name]


def infer_task(feature: Any, values: Sequence[Any], label_separator: str | None) -> Task:
    """HF run_classification's rule: list labels (or split strings) are multi-label, fractional floats regression."""
    import datasets  # lazily: see Task.label_feature

    if isinstance(feature, datasets.List | datasets.Sequence | datasets.LargeList) or label_separator:
        return task_for("multi_label_classification")
    texts = [v.strip() for v in values if isinstance(v, str)]
    if texts and all(t.startswith("[") and t.endswith("]") for t in texts):
        # a CSV cannot hold lists: '["neg", "other"]' would silently become one class per combination
        raise UserError(
            f"the labels look like lists written as text ({texts[0]}); a csv cannot hold lists: give a json, jsonl "
            "or parquet file with list labels, or join each row's labels with '|' and set data.label_separator='|'"
        )
    dtype = getattr(feature, "dtype", "")
    if dtype.startswith("float") and any(v is not None and float(v) != int(float(v)) for v in values):
        return task_for("regression")
    return task_for(DEFAULT_TASK)
