"""Every mandatory key (``???`` in a yaml) left unset ends in one line naming it, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ROOT, run_script


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


def test_every_mandatory_key_has_a_case():
    assert mandatory_keys() == {key for _, _, key in CASES}


@pytest.mark.parametrize(("script", "args", "key"), CASES, ids=[c[2] for c in CASES])
def test_missing_mandatory_key_is_one_line(script, args, key, tmp_path: Path):
    result = run_script(script, [*args, f"hydra.run.dir={tmp_path / 'run'}"], timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {key} is required but not set; add {key}=... to the command"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "MissingMandatoryValue" not in result.stderr
    assert not (tmp_path / "preds.csv").exists()
