"""bench/quality.py's statistics against a direct computation on a fixed example."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_mean_std_and_bootstrap_interval(quality):
    gold = ["a"] * 50 + ["b"] * 50
    right = list(gold)
    half = ["a"] * 100  # acc 0.5, macro-F1 (2/3 + 0) / 2
    out = quality.summarise(gold, {1: right, 2: half})
    assert [r["test/acc"] for r in out["per_seed"]] == [1.0, 0.5]
    assert out["test/acc"] == 0.75 and out["test/acc_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1), abs=1e-4)
    assert out["test/f1"] == pytest.approx((1.0 + 1 / 3) / 2, abs=1e-4)
    lo, hi = out["test/acc_ci95"]
    # each resample's seed mean is (1 + share of "a" in it) / 2: the CI is that share's CI, mapped
    assert 0.65 < lo < 0.75 < hi < 0.85
    # perfect predictions in every seed: no spread at all
    assert quality.summarise(gold, {1: right, 2: right})["test/acc_ci95"] == [1.0, 1.0]


def test_a_larger_test_set_gives_a_narrower_interval(quality):
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 1600):
        gold = list(rng.choice(["x", "y"], n))
        noisy = [g if rng.random() < 0.8 else ("y" if g == "x" else "x") for g in gold]
        lo, hi = quality.summarise(gold, {0: noisy})["test/acc_ci95"]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4 of the width


def test_the_goals_are_read_from_the_rows(quality):
    def row(acc, lo, hi, f1=None):
        return {"test/acc": acc, "test/acc_ci95": [lo, hi], "test/f1": f1 if f1 is not None else acc}

    results = {"hyperpartisan": {"tfidf": row(0.79, 0.76, 0.82), "truncate_512": row(0.77, 0.74, 0.80),
                                 "hierarchical_4096": row(0.80, 0.77, 0.83), "chunks_4096": row(0.78, 0.75, 0.81)}}
    goals = quality.goals(results)
    assert goals["hyperpartisan"]["best_long_reader"] == "hierarchical_4096"
    assert goals["hyperpartisan"]["beats_truncate_and_tfidf"] is True
    assert goals["hyperpartisan"]["met"] is False and goals["hyperpartisan"]["cis_apart"] is False
    results["hyperpartisan"]["hierarchical_4096"] = row(0.86, 0.835, 0.88)
    assert quality.goals(results)["hyperpartisan"]["met"] is True
    assert quality.goals(results)["hyperpartisan"]["cis_apart"] is True
    assert quality.goals(results)["peps"] == {"met": None, "missing": ["truncate_512", "tfidf", "a long reader"]}
    results["peps"] = {"tfidf": row(0.84, 0, 1, f1=0.50), "truncate_512": row(0.89, 0, 1, f1=0.74),
                       "hierarchical_4096": row(0.88, 0, 1, f1=0.745)}
    assert quality.goals(results)["peps"]["met"] is True


def test_reader_rows_name_their_reader_and_length(quality):
    assert quality.reader_and_length("head_tail_512") == ("head_tail", 512)
    assert quality.reader_and_length("hierarchical_4096_w256") == ("hierarchical", 4096)
    with pytest.raises(ValueError, match="<reader>_<length>"):
        quality.reader_and_length("hierarchical")
    # every row's name agrees with what its overrides select
    for row, overrides in quality.READER_ROWS.items():
        reader, _ = quality.reader_and_length(row)
        assert f"reader={reader}" in overrides, row
