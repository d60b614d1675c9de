"""Bad data ends ``train.py`` with exit code 2, one ``error:`` line naming the file/key, and no outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bigbird_ft.data.sources import FilesDataModule
from bigbird_ft.data.validation import check_utf8
from bigbird_ft.errors import UserError
from tests.conftest import run_script, tiny_overrides


def good_rows(n: int = 24) -> list[dict]:
    return [{"text": f"document number {i} " + "word " * (3 + i), "label": "a" if i % 2 else "b"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_files(tmp_path: Path, train_file: Path, *extra: str):
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    # the case's own overrides last, so they win over the tiny defaults
    return run_script("train.py", ["data=files", f"data.train_file={train_file}", *overrides, *extra])


def assert_one_line_error(result, *needles: str, tmp_path: Path) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists() and not (run / "hf_model").exists()
    assert not (run / "checkpoints").exists()
    return lines[0]


def test_non_utf8_csv_names_file_and_byte(tmp_path):
    path = tmp_path / "latin1.csv"
    pd.DataFrame(good_rows()).to_csv(path, index=False)
    data = path.read_bytes()
    position = data.index(b"document number 5")
    path.write_bytes(data[:position] + "café ".encode("latin-1") + data[position:])
    line = assert_one_line_error(run_files(tmp_path, path), str(path), "data.train_file", tmp_path=tmp_path)
    assert f"byte offset {position + 3}" in line and "line 7" in line


def test_malformed_jsonl_line_is_named(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", good_rows())
    lines = path.read_text().splitlines()
    lines[9] = lines[9][:-1]  # drop the closing brace of line 10
    path.write_text("\n".join(lines) + "\n")
    line = assert_one_line_error(run_files(tmp_path, path), str(path), "line 10", "data.train_file", tmp_path=tmp_path)
    assert "not valid JSON" in line


def test_empty_texts_are_listed_by_row(tmp_path):
    rows = good_rows()
    rows[3]["text"] = "   "
    rows[7]["text"] = ""
    path = write_jsonl(tmp_path / "empty.jsonl", rows)
    assert_one_line_error(run_files(tmp_path, path), "rows 4, 8", "data.drop_empty", str(path), tmp_path=tmp_path)


def test_nan_label_in_csv_is_listed_by_row(tmp_path):
    frame = pd.DataFrame(good_rows())
    frame.loc[5, "label"] = None
    path = tmp_path / "nan.csv"
    frame.to_csv(path, index=False)
    assert_one_line_error(run_files(tmp_path, path), "missing label", "rows 6", "data.label_column", str(path),
                          tmp_path=tmp_path)


def test_missing_column_lists_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "cols.jsonl", good_rows())
    assert_one_line_error(run_files(tmp_path, path, "data.text_column=body"), "'body'", "columns: text, label",
                          "data.text_column", tmp_path=tmp_path)


def test_drop_empty_drops_with_a_count(tmp_path, caplog):
    rows = good_rows()
    rows[2]["text"] = " \n "
    path = write_jsonl(tmp_path / "empty.jsonl", rows)
    dm = FilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"), drop_empty=True, val_fraction=0.25)
    with caplog.at_level("WARNING"):
        dm.prepare_raw()
    assert len(dm.raw["train"]) + len(dm.raw["validation"]) == len(rows) - 1
    assert "dropped 1 row(s) with empty text" in caplog.text


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.csv", None, "file not found"),
        ("data.txt", "a,b\n", "unknown extension"),
        ("empty.csv", "", "file is empty"),
        ("array.json", '[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]', "line 2"),
    ],
)
def test_file_problems_are_one_user_error(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    dm = FilesDataModule(train_file=str(path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(UserError, match=needle) as info:
        dm.prepare_raw()
    assert "data.train_file" in str(info.value) and "\n" not in str(info.value)


def test_utf8_check_across_chunk_boundaries(tmp_path):
    path = tmp_path / "x.csv"
    text = "é" * 10 + "\n" + "ü" * 10
    data = text.encode("utf-8")
    path.write_bytes(data + b"\xff")
    for chunk_size in (1, 3, 4, 7, 1 << 20):
        with pytest.raises(UserError, match=f"byte offset {len(data)} \\(line 2\\)"):
            check_utf8(path, "data.train_file", chunk_size=chunk_size)


def test_a_generated_task_spec_that_cannot_work_is_one_line(tmp_path):
    # three earlier statements 520 words apart do not fit before word 100
    overrides = [o for o in tiny_overrides(tmp_path) if o.split("=", 1)[0] not in ("model", "data.spec.min_words")]
    result = run_script("train.py", ["experiment=qa_longrange", *overrides, "data.spec.answer_after=100"])
    assert_one_line_error(result, "data.spec.answer_after", "window_words", tmp_path=tmp_path)
