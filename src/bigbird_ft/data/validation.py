"""File checks that turn bad user data into one line naming the file, line or byte to fix.

datasets' loaders do read these files, but on bad bytes or a broken JSON line they raise long
pyarrow/pandas errors that name neither the line nor the byte. Hence these few checks; the row
checks (missing labels, empty texts) are in ``documents.py``.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from ..errors import UserError


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


