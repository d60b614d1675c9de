"""What a document is on its way in, shared by the data pipeline, the tasks, predict and evidence.

Joining a row's text columns, the row checks that turn bad data into one line naming the rows, a
batch's targets, and where the windows over a long document start. It imports none of those users,
so each of them can use it.

The row checks exist because datasets' loaders happily load missing labels (as None / NaN) or empty
texts, which would train on garbage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import UserError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

MAX_LISTED_ROWS = 10
#: a document whose tokens are mostly the tokenizer's unknown token is one the model cannot read
MOSTLY_UNKNOWN = 0.5


def row_numbers(indices: Sequence[int]) -> str:
    """1-based row numbers (the first data row is 1), the first few only."""
    shown = ", ".join(str(i + 1) for i in indices[:MAX_LISTED_ROWS])
    more = f" and {len(indices) - MAX_LISTED_ROWS} more" if len(indices) > MAX_LISTED_ROWS else ""
    return f"{shown}{more}"


def unknown_share(ids: Sequence[int], unknown_id: int | None) -> float:
    """The share of a document's token ids that are the unknown token (special tokens included)."""
    if unknown_id is None or not ids:
        return 0.0
    return sum(1 for i in ids if i == unknown_id) / len(ids)


def warn_unknown_tokens(shares: Sequence[float], texts: Sequence[str], what: str) -> str | None:
    """One warning line about the documents the tokenizer maps mostly to its unknown token (another
    script, binary junk): their predictions mean nothing, and nothing else would say so."""
    bad = [i for i, share in enumerate(shares) if share > MOSTLY_UNKNOWN]
    if not bad:
        return None
    first = " ".join(str(texts[bad[0]]).split())[:40]
    line = (f"{len(bad)} of {len(shares)} {what} are mostly unknown tokens to the tokenizer (unknown-token share "
            f"up to {max(shares[i] for i in bad):.0%}; the first: {first!r}): another script or binary junk "
            "the model cannot read; check the text column, or use a model whose tokenizer covers this text")
    log.warning(line)
    return line


def join_text_columns(example: dict[str, Any], columns: Sequence[str], separator: str) -> str:
    parts = [example[c] for c in columns]
    return separator.join("" if p is None else str(p) for p in parts)


def is_missing(value: Any, blank_is_label: bool = False) -> bool:
    """None, NaN (pandas' reading of an empty csv cell) and blank strings are no label.

    With a label separator (multi-label), an empty cell is a real label set: "none of them".
    """
    if blank_is_label:
        return False
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _is_blank_text(parts: Sequence[Any]) -> bool:
    return all(p is None or (isinstance(p, float) and math.isnan(p)) or not str(p).strip() for p in parts)


def check_rows(
    ds: datasets.Dataset,
    split: str,
    source: str,
    text_columns: Sequence[str],
    label_column: str,
    drop_empty: bool = False,
    blank_is_label: bool = False,
) -> datasets.Dataset:
    """Fail on missing labels; fail on (or, with ``drop_empty``, drop) empty texts."""
    labels = ds[label_column]
    missing = [i for i, value in enumerate(labels) if is_missing(value, blank_is_label)]
    if missing:
        raise UserError(
            f"missing label ('{label_column}' empty or NaN) in {len(missing)} row(s) of the {split} split of "
            f"{source}: rows {row_numbers(missing)}; fill or remove them, or fix data.label_column"
        )
    columns = [ds[c] for c in text_columns]
    empty = [i for i, parts in enumerate(zip(*columns, strict=True)) if _is_blank_text(parts)]
    if not empty:
        return ds
    if not drop_empty:
        raise UserError(
            f"empty or whitespace-only text in {len(empty)} row(s) of the {split} split of {source}: "
            f"rows {row_numbers(empty)}; fix them or set data.drop_empty=true"
        )
    log.warning("dropped %d row(s) with empty text from the %s split of %s (data.drop_empty=true)",
                len(empty), split, source)
    dropped = set(empty)
    return ds.select([i for i in range(len(ds)) if i not in dropped])


def window_starts(n_tokens: int, body: int, stride: int, long_docs: str) -> list[int]:
    """Where each model input starts in a document's content tokens: one (truncate) or overlapping
    windows of ``body`` tokens sharing ``stride`` (chunk). Predict and evidence cut documents alike."""
    starts = [0]
    if long_docs == "chunk":
        while starts[-1] + body < n_tokens:
            starts.append(starts[-1] + body - stride)
    return starts


def stack_labels(labels: Sequence[Any]) -> torch.Tensor:
    """Integer class ids stay long (cross-entropy); anything float is a float32 target (BCE, MSE)."""
    target = torch.as_tensor(labels)
    return target.float() if target.is_floating_point() else target.long()
