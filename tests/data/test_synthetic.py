import itertools
import json

import pytest

from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec, generate
from bigbird_ft.errors import UserError


def test_generation_is_deterministic_and_cached(tmp_path):
    spec = SyntheticSpec(num_train=20, num_validation=5, num_test=5, min_words=50, max_words=120)
    first = generate(spec, tmp_path / "a")
    second = generate(spec, tmp_path / "b")
    for split in ("train", "validation", "test"):
        assert first[split].read_text() == second[split].read_text()
    mtime = first["train"].stat().st_mtime_ns
    assert generate(spec, tmp_path / "a")["train"].stat().st_mtime_ns == mtime
    other = generate(SyntheticSpec(seed=7, num_train=20, num_validation=5, num_test=5), tmp_path / "a")
    # another spec is another corpus: other contents, in another file (the first one is kept)
    assert other["train"].read_text() != first["train"].read_text()
    assert first["train"].stat().st_mtime_ns == mtime


def test_label_is_decided_by_its_own_markers_only():
    spec = SyntheticSpec(min_words=100, max_words=300)
    corpus = SyntheticCorpus(spec)
    rows = corpus.split("train", 60)
    assert {r["label"] for r in rows} == set(spec.labels)
    for row in rows:
        words = set(row["text"].replace(".", "").split())
        for label, markers in corpus.markers.items():
            present = words & set(markers)
            assert bool(present) == (label == row["label"]), (row["id"], label)
        n_words = len(row["text"].split())
        assert spec.min_words <= n_words <= spec.max_words + spec.evidence_words


def test_evidence_position_is_spread_over_the_document():
    corpus = SyntheticCorpus(SyntheticSpec())
    rows = corpus.split("validation", 200)
    relative = [r["evidence_word"] / len(r["text"].split()) for r in rows]
    # uniform placement: every fifth of the document receives evidence
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        assert any(lo <= x < lo + 0.2 for x in relative)
    beyond_512 = sum(r["evidence_word"] > 512 for r in rows) / len(rows)
    assert beyond_512 > 0.6


def test_jsonl_rows_have_id_text_label(tmp_path):
    paths = generate(SyntheticSpec(num_train=3, num_validation=2, num_test=2, min_words=50, max_words=60), tmp_path)
    row = json.loads(paths["train"].read_text().splitlines()[0])
    assert set(row) >= {"id", "text", "label"}


def test_evidence_char_span_is_exactly_the_marker_phrase():
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec, evidence_char_span

    corpus = SyntheticCorpus(SyntheticSpec(min_words=40, max_words=200))
    for row in corpus.split("test", 30):
        start, end = evidence_char_span(row)
        words = [w.rstrip(".") for w in row["text"][start:end].split()]
        assert len(words) == 4 and set(words) <= set(corpus.markers[row["label"]])


def test_qa_answer_span_and_opening_definitions_shape_each_context():
    from bigbird_ft.data.synthetic_qa import QaCorpus, QaSpec

    short = {"min_words": 90, "max_words": 160, "answer_after": 60}
    for answer_span in ("object", "record"):
        for opening in (None, 1, 2):
            for row in QaCorpus(QaSpec(**short, answer_span=answer_span, opening_definitions=opening)).split("test", 20):
                words, text, start = row["context"].split(), row["answers"]["text"][0], row["answers"]["answer_start"][0]
                assert row["context"][start:start + len(text)] == text
                role = row["question"].split()[3]
                holder = next(words[i] for i in range(len(words) - 3) if words[i + 3] == role and words[i + 1] == "is")
                record = words[words.index(holder, 5 * (opening or 4)):][:3]  # the holder's sentence past the opening
                assert record[1] == "holds"
                assert text == (" ".join(record) if answer_span == "record" else record[2])
                assert row["context"].count(" is the ") == (opening or 4)  # only the asked holder with opening=1
    with pytest.raises(UserError, match="answer_span"):
        QaCorpus(QaSpec(**short, answer_span="sentence"))
    with pytest.raises(UserError, match="opening_definitions"):
        QaCorpus(QaSpec(**short, opening_definitions=5))


def test_qa_latest_task_answers_the_last_statement_and_keeps_statements_a_window_apart():
    from bigbird_ft.data.synthetic_qa import QaCorpus, QaSpec

    short = {"min_words": 140, "max_words": 200, "answer_after": 100, "window_words": 30, "task": "latest"}
    for answer_span in ("object", "record"):
        for row in QaCorpus(QaSpec(**short, answer_span=answer_span)).split("test", 30):
            words, text, start = row["context"].split(), row["answers"]["text"][0], row["answers"]["answer_start"][0]
            assert row["context"][start:start + len(text)] == text
            name = row["question"].split()[2]
            said = [i for i in range(len(words) - 2) if words[i] == name and words[i + 1] == "holds"]
            assert len(said) == 4 and len({words[i + 2] for i in said}) == 4  # four different objects
            assert all(b - a >= 30 for a, b in itertools.pairwise(said))  # never two in one window
            last = said[-1]
            assert last >= 100 and len(words) - last >= 30  # past answer_after, and not in the final window
            assert said[-2] < 100  # the earlier statements before answer_after
            assert text == (" ".join(words[last:last + 3]) if answer_span == "record" else words[last + 2])
            assert row["answer_word"] == (last if answer_span == "record" else last + 2)
    with pytest.raises(UserError, match="task"):
        QaCorpus(QaSpec(**short | {"task": "first"}))
    with pytest.raises(UserError, match="window_words"):
        QaCorpus(QaSpec(**short | {"window_words": 40}))  # three earlier statements 40 apart do not fit before 100


def test_qa_train_near_statement_moves_another_holder_next_to_the_answer_in_training_only():
    from bigbird_ft.data.synthetic_qa import QaCorpus, QaSpec

    short = {"min_words": 140, "max_words": 200, "answer_after": 100, "window_words": 30, "task": "latest",
             "answer_span": "record"}

    def nearest_other(row: dict) -> int:
        """Words between the answer and the closest statement of another holder."""
        words, answer = row["context"].split(), row["answer_word"]
        return min(abs(i - answer) for i in range(len(words) - 1)
                   if words[i + 1] == "holds" and words[i] != words[answer])

    plain, hard = QaCorpus(QaSpec(**short)), QaCorpus(QaSpec(**short, train_near_statement=1.0))
    for split in ("validation", "test"):  # the evaluated documents do not change
        assert plain.split(split, 40) == hard.split(split, 40)
    # every training document now has another holder's statement within window_words / 2 (15 words, plus the
    # answer's own 4-word sentence when it lands after it); without the key, far fewer do
    assert all(nearest_other(row) <= 15 + 4 for row in hard.split("train", 100))
    assert sum(nearest_other(row) <= 15 + 4 for row in plain.split("train", 100)) < 80
    with pytest.raises(UserError, match="train_near_statement"):
        QaCorpus(QaSpec(**short, train_near_statement=1.5))
