"""Checks that turn bad user data into one line naming the file, line or row to fix.

datasets' loaders do read these files, but on bad bytes or a broken JSON line they raise long
pyarrow/pandas errors that name neither the line nor the byte, and they happily load missing
labels (as None / NaN) or empty texts, which would train on garbage. Hence these few checks.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from ..errors import UserError

log = logging.getLogger(__name__)

MAX_LISTED_ROWS = 10


def _rows(indices: Sequence[int]) -> str:
    """1-based row numbers (the first data row is 1), the first few only."""
    shown = ", ".join(str(i + 1) for i in indices[:MAX_LISTED_ROWS])
    more = f" and {len(indices) - MAX_LISTED_ROWS} more" if len(indices) > MAX_LISTED_ROWS else ""
    return f"{shown}{more}"


def check_utf8(path: Path, key: str, chunk_size: int = 1 << 20) -> None:
    """Fail on the first byte that is not UTF-8, naming its byte offset and line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    newlines = 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # err.start counts from the start of the decoder's buffer: a few bytes may still be
                # pending from the previous chunk, which is at most 3 bytes before this one
                pending = len(err.object) - len(chunk)
                position = offset - pending + err.start
                line = newlines + err.object[: err.start].count(b"\n") + 1  # pending bytes hold no newline
                bad = err.object[err.start]
                raise UserError(
                    f"{path} is not UTF-8: byte 0x{bad:02x} at byte offset {position} (line {line}); "
                    f"re-save it as UTF-8 or fix {key}"
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def _check_json_lines(path: Path, key: str) -> None:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{path} line {number} is not valid JSON ({err.msg}, column {err.colno}); fix {key}"
                ) from None
            if not isinstance(value, dict):
                raise UserError(f"{path} line {number} is a JSON {type(value).__name__}, not an object; fix {key}")


def check_json(path: Path, key: str) -> None:
    """JSON Lines are checked line by line; a ``.json`` file may also be one JSON document."""
    if path.suffix.lower() == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            json.loads(text)
            return
        except json.JSONDecodeError as err:
            first = text.lstrip()[:1]
            if first == "[":  # one document (an array of rows): its own error position
                raise UserError(
                    f"{path} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}); fix {key}"
                ) from None
    _check_json_lines(path, key)


def check_file(path: Path, key: str) -> None:
    """Text formats are checked for UTF-8 and, for JSON, parsed; parquet is binary and self-checking."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json", ".jsonl"):
        check_utf8(path, key)
    if suffix in (".json", ".jsonl"):
        check_json(path, key)


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
            f"{source}: rows {_rows(missing)}; fill or remove them, or fix data.label_column"
        )
    columns = [ds[c] for c in text_columns]
    empty = [i for i, parts in enumerate(zip(*columns, strict=True)) if _is_blank_text(parts)]
    if not empty:
        return ds
    if not drop_empty:
        raise UserError(
            f"empty or whitespace-only text in {len(empty)} row(s) of the {split} split of {source}: "
            f"rows {_rows(empty)}; fix them or set data.drop_empty=true"
        )
    log.warning("dropped %d row(s) with empty text from the %s split of %s (data.drop_empty=true)",
                len(empty), split, source)
    dropped = set(empty)
    return ds.select([i for i in range(len(ds)) if i not in dropped])
