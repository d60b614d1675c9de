"""long_docs=chunk reads what truncation cuts: the default recipe trained at max_length 256."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import LEARNABILITY_CORPUS, ROOT, SESSION_CACHE


@pytest.mark.slow
def test_chunk_labels_documents_whose_evidence_truncation_cuts(tmp_path):
    # test_learnability's corpus (200-900 words, so one generated corpus and tokenizer serve both): at 256
    # tokens truncation cuts the evidence away in about half the documents, and the model still learns the
    # phrase from the other half
    cache_root = SESSION_CACHE.get("root", tmp_path)
    overrides = [f"{key}={value}" for key, value in LEARNABILITY_CORPUS.items()]
    overrides += [f"paths.generated_dir={cache_root / 'generated'}", f"paths.cache_dir={cache_root / 'cache'}"]
    out = tmp_path / "long_docs.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "long_docs.py"), "--max-length", "256", "--stride", "64",
         "--workdir", str(tmp_path / "work"), "--out", str(out), "--", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,  # a hang guard, not a speed limit
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
