"""The bad-input battery: each case through the real CLI ends with exit code 2, exactly one
``error:`` line naming the problem and the key or file to change, no traceback, and no output.

More data cases (non-UTF-8 bytes, a malformed JSONL line, empty texts, NaN labels, a missing text
column) live in test_data_errors.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_script, tiny_overrides
from tests.data.test_data_errors import assert_one_line_error, good_rows, run_files, write_jsonl


def csv_file(tmp_path: Path, rows: list[dict], name: str = "train.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def text_file(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


TRAIN_CASES = {
    "missing train file": (lambda t: [f"data.train_file={t / 'nope.csv'}"], ["file not found", "data.train_file"]),
    "unknown extension": (lambda t: [f"data.train_file={text_file(t / 'a.xlsx', 'x')}"],
                          ["unknown extension '.xlsx'", "data.train_file"]),
    "empty file": (lambda t: [f"data.train_file={text_file(t / 'e.csv', '')}"],
                   ["empty", "data.train_file"]),
    "missing label column": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "data.label_column=verdict"],
                             ["'verdict'", "columns: text, label", "data.label_column"]),
    "one class only": (lambda t: [f"data.train_file={csv_file(t, [dict(r, label='a') for r in good_rows()])}"],
                       ["one class", "data.label_column"]),
    "label unseen in training": (
        lambda t: [f"data.train_file={csv_file(t, good_rows())}",
                   f"data.validation_file={csv_file(t, [dict(r, label='zzz') for r in good_rows(4)], 'val.csv')}"],
        ["['zzz']", "validation"]),
    "max_length beyond positions": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "data.max_length=2048"],
                                    ["max_position_embeddings=1024", "data.max_length"]),
    "padding not a block multiple": (
        lambda t: [f"data.train_file={csv_file(t, good_rows())}", "data.pad_to_multiple_of=24"],
        ["model.block_size=16", "data.pad_to_multiple_of"]),
    "unknown attention": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "attention=nope"],
                          ["unknown attention option 'nope'", "block_sparse, flex, hf_block_sparse"]),
    "unknown head": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "head=nope"],
                     ["unknown head option 'nope'", "attention, cls, max, mean, pooler"]),
    "flex training on cpu": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "attention=flex"],
                             ["attention=flex cannot train on CPU", "attention=block_sparse"]),
    "unknown problem type": (lambda t: [f"data.train_file={csv_file(t, good_rows())}", "model.problem_type=ordinal"],
                             ["model.problem_type"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input(tmp_path, case):
    make_args, needles = TRAIN_CASES[case]
    args = make_args(tmp_path)
    train_file = next(a.split("=", 1)[1] for a in args if a.startswith("data.train_file="))
    result = run_files(tmp_path, Path(train_file), *[a for a in args if not a.startswith("data.train_file=")])
    line = assert_one_line_error(result, *needles, tmp_path=tmp_path)
    print(f"{case}: {line}")


def test_full_traceback_on_request(tmp_path):
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", ["data=files", f"data.train_file={tmp_path / 'nope.csv'}", *overrides],
                        env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr


def run_predict(tmp_path: Path, *args: str):
    return run_script("predict.py", [*args, f"hydra.run.dir={tmp_path / 'pred'}"])


def assert_predict_error(result, output: Path, *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not output.exists()
    print(lines[0])
    return lines[0]


def docs(tmp_path: Path, n: int = 5, name: str = "docs.jsonl") -> Path:
    return write_jsonl(tmp_path / name, [{"id": f"d{i}", "text": "movx kifagomx " * (i + 3)} for i in range(n)])


def test_predict_missing_checkpoint(tmp_path):
    out = tmp_path / "p.csv"
    result = run_predict(tmp_path, f"ckpt_path={tmp_path / 'none.ckpt'}", f"input={docs(tmp_path)}", f"output={out}")
    assert_predict_error(result, out, "checkpoint not found", "ckpt_path")


def test_predict_run_dir_without_checkpoints(tmp_path):
    out = tmp_path / "p.csv"
    result = run_predict(tmp_path, f"run_dir={tmp_path}", f"input={docs(tmp_path)}", f"output={out}")
    assert_predict_error(result, out, "no checkpoint", "run_dir")


def test_predict_missing_input(tmp_path, trained_run):
    out = tmp_path / "p.csv"
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={tmp_path / 'none.jsonl'}", f"output={out}")
    assert_predict_error(result, out, "input file not found", "input")


def test_predict_unwritable_output(tmp_path, trained_run):
    out = Path("/proc/bigbird_ft/p.csv")
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={docs(tmp_path)}", f"output={out}")
    assert_predict_error(result, out, "cannot write", "output")


def test_predict_unknown_output_extension(tmp_path, trained_run):
    out = tmp_path / "p.xlsx"
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={docs(tmp_path)}", f"output={out}")
    assert_predict_error(result, out, "'.xlsx'", "output")


def test_predict_missing_text_column(tmp_path, trained_run):
    out = tmp_path / "p.csv"
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={docs(tmp_path)}", f"output={out}",
                         "text_column=body")
    assert_predict_error(result, out, "'body'", "columns: id, text", "text_column")


def test_predict_empty_text(tmp_path, trained_run):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "movx"}, {"text": "   "}])
    out = tmp_path / "p.csv"
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={path}", f"output={out}")
    assert_predict_error(result, out, "empty texts", "(rows 2)")


def test_a_crash_while_writing_predictions_leaves_no_output_file(tmp_path, make_classifier, monkeypatch):
    """The writer dies after half the rows: neither the output nor a temporary file is left behind,
    and an older output file is kept as it was (writing straight to ``output`` fails all three)."""
    import pandas as pd
    import torch

    from bigbird_ft.inference.predict import Request, write_predictions

    module = make_classifier(num_labels=2)
    frame = pd.DataFrame({"id": range(100), "text": ["x"] * 100})
    columns = module.task.prediction_columns(module.outputs(torch.randn(100, 2)), module.id2label, 0.5)
    real_to_csv = pd.DataFrame.to_csv

    def dies_halfway(self, path, **kwargs):
        real_to_csv(self.iloc[: len(self) // 2], path, **kwargs)
        raise MemoryError("killed mid-write")

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies_halfway)
    for existing in (None, "an older output\n"):
        out = tmp_path / f"p{existing is not None}.csv"
        if existing:
            out.write_text(existing)
        with pytest.raises(MemoryError):
            write_predictions(frame, columns, "id", Request(tmp_path / "in.csv", out))
        assert (out.read_text() if out.exists() else None) == existing
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_predict_input_json_written_by_pandas(tmp_path, trained_run):
    """A well-formed input still works after all the checks (guards against over-eager validation)."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "x", "text": "movx kifagomx"}, {"id": "y", "text": "ritix kipx"}]))
    out = tmp_path / "p.jsonl"
    result = run_predict(tmp_path, f"run_dir={trained_run}", f"input={path}", f"output={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["x", "y"]


def test_predict_reads_parquet_and_txt(tmp_path, trained_run):
    texts = ["movx kifagomx ritix", "nat tun movx", "kifagomx " * 40]
    pd.DataFrame({"id": ["a", "b", "c"], "text": texts}).to_parquet(tmp_path / "in.parquet")
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    outputs = {}
    for name in ("in.parquet", "in.txt"):
        out = tmp_path / f"{name}.jsonl"
        result = run_script("predict.py", [f"run_dir={trained_run}", f"input={tmp_path / name}",
                                           f"output={out}", f"hydra.run.dir={tmp_path / 'pred'}"])
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in outputs["in.parquet"]] == ["a", "b", "c"]
    assert [r["id"] for r in outputs["in.txt"]] == [0, 1, 2]  # no id column: the row index
    for parquet_row, txt_row in zip(outputs["in.parquet"], outputs["in.txt"], strict=True):
        assert parquet_row["label"] == txt_row["label"] and parquet_row["score"] == pytest.approx(txt_row["score"])
