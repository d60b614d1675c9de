"""Problem types (tasks): importing this package registers every one."""

from . import (
    multi_label,  # noqa: F401  (registration)
    question_answering,  # noqa: F401  (registration)
    regression,  # noqa: F401  (registration)
    single_label,  # noqa: F401  (registration)
    token_classification,  # noqa: F401  (registration)
)
from .base import Task, metric_key, sort_labels
from .registry import DEFAULT_TASK, available_tasks, default_task, infer_task, task_for

__all__ = ["DEFAULT_TASK", "Task", "available_tasks", "default_task", "infer_task", "metric_key", "sort_labels", "task_for"]
