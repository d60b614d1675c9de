"""Every mandatory key (``???`` in a yaml) left unset ends in one line naming it, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_script


def mandatory_keys() -> set[str]:
    """``group.key`` for every ``key: ???`` line under conf/ (predict.yaml's keys are top-level)."""
    found = set()
    for path in (ROOT / "conf").rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if value.split("#")[0].strip() == "???":
                group = path.parent.name if path.parent != ROOT / "conf" else ""
                found.add(f"{group}.{key.strip()}" if group else key.strip())
    return found


CASES = [
    ("train.py", ["data=files"], "data.train_file"),
    ("train.py", ["data=hub"], "data.name"),
    ("predict.py", [], "output"),
    ("predict.py", ["output=preds.csv", "run_dir=."], "input"),
]


#: python -m bigbird_ft.<tool>: conf/export.yaml and conf/convert.yaml
TOOL_CASES = [
    ("export", ["ckpt_path=a.ckpt"], "out"),
    ("convert", ["out=x"], "src"),
    ("convert", ["src=x"], "out"),
]


def test_every_mandatory_key_has_a_case():
    assert mandatory_keys() == {key for _, _, key in CASES + TOOL_CASES}


@pytest.mark.parametrize(("script", "args", "key"), CASES, ids=[c[2] for c in CASES])
def test_missing_mandatory_key_is_one_line(script, args, key, tmp_path: Path):
    result = run_script(script, [*args, f"hydra.run.dir={tmp_path / 'run'}"], timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {key} is required but not set; add {key}=... to the command"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "MissingMandatoryValue" not in result.stderr
    assert not (tmp_path / "preds.csv").exists()


@pytest.mark.parametrize(("tool", "args", "key"), TOOL_CASES, ids=[f"{c[0]}-{c[2]}" for c in TOOL_CASES])
def test_export_and_convert_name_a_missing_key(tool, args, key):
    result = subprocess.run([sys.executable, "-m", f"bigbird_ft.{tool}", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {key} is required but not set; add {key}=... to the command"]


def test_export_without_a_model_names_both_keys():
    """export takes run_dir= or ckpt_path= (the one checkpoint resolver): neither is one line naming both."""
    result = subprocess.run([sys.executable, "-m", "bigbird_ft.export", "out=x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no model given; set run_dir=<a train run dir> or ckpt_path=<file.ckpt>"]


def test_export_names_an_unknown_key():
    result = subprocess.run([sys.executable, "-m", "bigbird_ft.export", "ckpt_path=a.ckpt", "out=x", "onnx=3"],
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1
    assert "onnx" in lines[0] and "run_dir, ckpt_path, out, onnx_length" in lines[0]
