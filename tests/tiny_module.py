"""A tiny BigBirdClassifier of any problem type, head and optim recipe (for the issue-5 tests)."""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import TINY_MODEL

SINGLE = "single_label_classification"
MULTI = "multi_label_classification"
REGRESSION = "regression"


def build_tiny(
    tokenizer: Any,
    *,
    head: str = "cls",
    problem_type: str = SINGLE,
    num_labels: int = 3,
    attention: str = "hf_full",
    model_extra: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    num_layers: int = 2,
):
    """Same shape as conftest's make_classifier, plus problem type / loss / optimizer options."""
    from bigbird_ft.models.factory import build_classifier

    model = copy.deepcopy(TINY_MODEL)
    model["config"]["num_hidden_layers"] = num_layers
    model.update(model_extra or {})
    id2label = {0: "prediction"} if problem_type == REGRESSION else {i: f"l{i}" for i in range(num_labels)}
    return build_classifier(
        model=model,
        attention={"name": attention},
        head={"name": head, "dropout": 0.0},
        id2label=id2label,
        tokenizer=tokenizer,
        problem_type=problem_type,
        optim={"lr": 1e-3, **(optim or {})},
        data={"max_length": 512, "pad_to_multiple_of": 16, "text_column": "text"},
    )
