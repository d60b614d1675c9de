"""long_docs=chunk reads what truncation cuts: the long-range task trained at max_length 512."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT, SESSION_CACHE


@pytest.mark.slow
def test_chunk_labels_documents_whose_evidence_truncation_cuts(tmp_path):
    # the default experiment, smaller: 1,200 documents of ~500-1,700 tokens, 4 epochs
    cache_root = SESSION_CACHE.get("root", tmp_path)
    overrides = ["data.spec.num_train=1200", "data.spec.num_validation=100", "data.spec.num_test=200",
                 "data.spec.max_words=1600", "trainer.max_epochs=4",
                 f"paths.generated_dir={cache_root / 'generated'}", f"paths.cache_dir={cache_root / 'cache'}"]
    out = tmp_path / "long_docs.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "long_docs.py"), "--max-length", "512", "--stride", "64",
         "--workdir", str(tmp_path / "work"), "--out", str(out), "--", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,  # a hang guard: on a loaded 2-core machine this run takes over 15 min
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["evidence_cut_documents"] >= 50  # enough documents to tell the two apart
    truncate, chunk = report["accuracy"]["truncate"], report["accuracy"]["chunk"]
    assert chunk["evidence_cut"] >= 0.9
    assert truncate["evidence_cut"] <= 0.5  # 4 classes: a guess is 0.25
    # where the evidence is within reach both read it
    assert truncate["evidence_kept"] >= 0.85 and chunk["evidence_kept"] >= 0.85
