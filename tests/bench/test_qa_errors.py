"""bench/qa_longrange.py's error analysis on a fixed, hand-counted example."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def qa_bench():
    sys.path.insert(0, str(ROOT / "bench"))  # qa_longrange imports its sibling ner_longrange
    try:
        spec = importlib.util.spec_from_file_location("bench_qa_longrange", ROOT / "bench" / "qa_longrange.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def row(context: str, answer: str) -> dict:
    return {"context": context, "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


def test_wrong_answers_are_named_by_their_statement_and_bucketed_by_the_nearest_other_holder(qa_bench):
    filler = " ".join(["zo"] * 150)
    # Varn's last statement is the answer; Kel's sits 3 words before it, Dor's 150+ words away
    near = row(f"Varn holds ab . {filler} Kel holds cd . Varn holds ef . {filler} Dor holds gh .", "Varn holds ef")
    # Mo's only other statement sits 150+ words after the answer
    far = row(f"Tup holds ij . Mo holds kl . {filler} Tup holds mn .", "Mo holds kl")
    third = row(f"Ra holds op . {filler} Ra holds qr . {filler} {filler} Si holds st .", "Ra holds qr")

    def answered(r: dict, text: str) -> dict:
        start = r["context"].rindex(text)
        return {"answer": text, "start": start, "end": start + len(text)}

    out = qa_bench.error_kinds([near, far, third], [
        answered(near, "Kel holds cd"),   # another holder's statement
        answered(far, "Mo holds kl"),     # right
        answered(third, "Ra holds op"),   # the asked holder's earlier statement
    ])
    assert out["kinds"] == {"right": 1, "another holder's statement": 1,
                            "the asked holder's earlier statement": 1, "other": 0}
    # near: Kel 4 words before the answer -> bucket 0 (wrong); far: Tup 4 words before Mo -> bucket 0 (right);
    # third: Si 300+ words after -> bucket 3 (wrong)
    assert out["by_nearest_other_statement"] == {"0": [2, 1], "3": [1, 1]}
    # each kind on its own, so that swapping the two wrong kinds cannot balance out
    assert qa_bench.error_kinds([near], [answered(near, "Kel holds cd")])["kinds"]["another holder's statement"] == 1
    assert qa_bench.error_kinds([third], [answered(third, "Ra holds op")])["kinds"][
        "the asked holder's earlier statement"] == 1
