"""model.problem_type=token_classification: alignment, windows, entity metrics, train -> predict -> export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bigbird_ft.errors import UserError
from bigbird_ft.inputs.spec import InputSpec
from bigbird_ft.tasks.token_classification import (
    IGNORED,
    EntityMetrics,
    encode_words,
    window_owners,
    word_features,
)
from tests.conftest import TINY_MODEL, run_script, tiny_overrides


def test_first_sub_word_carries_the_tag_the_rest_is_ignored(tiny_tokenizer):
    words = ["Varnoxel", "is", "a", "riverbank", "."]
    ids, word_ids = encode_words(tiny_tokenizer, [words])
    assert len(ids[0]) > len(words)  # some words are split: the alignment has work to do
    (feature,) = word_features(ids[0], word_ids[0], [1, 0, 0, 2, 0], InputSpec(102, 16, stride=10),
                               cls_id=tiny_tokenizer.cls_token_id, sep_id=tiny_tokenizer.sep_token_id)
    assert feature["input_ids"][0] == tiny_tokenizer.cls_token_id and feature["input_ids"][-1] == tiny_tokenizer.sep_token_id
    seen = set()
    for position, word in enumerate([None, *word_ids[0], None]):
        if word is None or word in seen:
            assert feature["labels"][position] == IGNORED and feature["word_ids"][position] == -1
        else:
            seen.add(word)
            assert feature["word_ids"][position] == word
            assert feature["labels"][position] == [1, 0, 0, 2, 0][word]
    assert seen == set(range(len(words)))


def test_windows_tag_every_word_exactly_once(tiny_tokenizer):
    words = [f"w{i % 37}ab" for i in range(300)]
    ids, word_ids = encode_words(tiny_tokenizer, [words])
    features = word_features(ids[0], word_ids[0], None, InputSpec(42, 16, stride=12), cls_id=0, sep_id=1)
    assert len(features) > 5 and all(len(f["input_ids"]) <= 42 for f in features)
    owned = [w for f in features for w in f["word_ids"] if w >= 0]
    assert sorted(owned) == list(range(len(words)))  # each word once, none missing


def test_a_word_in_an_overlap_goes_to_the_window_where_it_has_more_context():
    # windows start at 0 and 28 (body 40, stride 12): position 30 is 2 from the second window's
    # start but 9 from the first window's end, position 38 the other way round
    assert window_owners([30, 38, 5, 60], [0, 28], 40) == [0, 1, 0, 1]


def test_entity_metrics_join_windows_and_score_like_seqeval():
    from seqeval.metrics import f1_score

    names = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}
    metric = EntityMetrics(names)
    # one document in two windows: the PER entity (words 2-3) spans the window boundary
    gold = [[0, 0, 1], [2, 0, 3]]
    guess = [[0, 0, 1], [2, 0, 1]]  # the LOC is mistyped as PER
    for window, (g, p) in enumerate(zip(gold, guess, strict=True)):
        probs = torch.nn.functional.one_hot(torch.tensor([p]), 4).float()
        words = torch.tensor([[3 * window + i for i in range(3)]])
        metric.update(probs, torch.tensor([g]), row=torch.tensor([7]), word_ids=words)
    values = metric.compute()
    tags = lambda ids: [[names[i] for row in ids for i in row]]  # noqa: E731
    assert float(values["f1"]) == pytest.approx(f1_score(tags(gold), tags(guess)))
    assert float(values["f1"]) == pytest.approx(0.5)  # PER right, LOC missed, one spurious PER
    assert float(values["f1_PER"]) == pytest.approx(2 / 3) and float(values["f1_LOC"]) == 0.0
    assert float(values["acc"]) == pytest.approx(5 / 6)


def test_plain_tags_are_read_as_io_entities():
    metric = EntityMetrics({0: "O", 1: "river"})
    probs = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 0, 1]]), 2).float()
    metric.update(probs, torch.tensor([[0, 1, 1, 0, 1]]), row=torch.tensor([0]), word_ids=torch.arange(5)[None])
    values = metric.compute()
    assert float(values["f1"]) == 1.0 and float(values["f1_river"]) == 1.0


@pytest.mark.parametrize(("problem_type", "head"), [("token_classification", "attention"),
                                                    ("single_label_classification", "token")])
def test_the_head_must_fit_the_task(tiny_tokenizer, problem_type, head):
    from bigbird_ft.models.factory import build_classifier

    with pytest.raises(UserError, match="does not fit model.problem_type"):
        build_classifier(model=TINY_MODEL, attention={"name": "block_sparse"}, head={"name": head},
                         id2label={0: "O", 1: "B-x"}, tokenizer=tiny_tokenizer, problem_type=problem_type)


# ---------------------------------------------------------------------------- end to end


def ner_overrides(tmp: Path, **extra: object) -> list[str]:
    """The long-range tagging experiment, shrunk: short documents, 256-token windows."""
    return ["experiment=ner_longrange", *tiny_overrides(tmp, **{
        "data.spec.min_words": 150, "data.spec.max_words": 420, "data.spec.mention_after": 120,
        "data.spec.num_train": 32, "data.max_length": 256, "data.chunk_stride": 32, "model.block_size": 16,
        "trainer.max_epochs": 1, **extra})]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_tagging_trains_predicts_every_word_and_exports_a_stock_model(tmp_path):
    from transformers import AutoModelForTokenClassification, pipeline

    from bigbird_ft.data.synthetic_ner import NerCorpus, NerSpec
    from bigbird_ft.models.factory import load_classifier

    result = run_script("train.py", ner_overrides(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test/f1"] <= 1 and 0 <= metrics["test/acc"] <= 1 and "val/f1_best" in metrics

    # documents longer than the 256-token windows: every word tagged once, spans exact
    spec = NerSpec(min_words=300, max_words=500, mention_after=200)
    docs = NerCorpus(spec).split("test", 4)
    source = write_jsonl(tmp_path / "docs.jsonl", [{"id": d["id"], "tokens": d["tokens"]} for d in docs])
    out = tmp_path / "tags.jsonl"
    result = run_script("predict.py", [f"run_dir={run}", f"input={source}", f"output={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [d["id"] for d in docs]
    module = load_classifier(next((run / "checkpoints").glob("*.ckpt")))
    tags = set(module.id2label.values())
    for row, doc in zip(rows, docs, strict=True):
        assert len(row["tags"]) == len(doc["tokens"]) and set(row["tags"]) <= tags
        assert row["text"] == " ".join(doc["tokens"])
        for entity in row["entities"]:
            assert row["text"][entity["start"]:entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    # raw text input: words and punctuation split out, offsets into the original text
    text = tmp_path / "raw.txt"
    text.write_text("Varn is a river.  Then   Tolk, far away.\n")
    out = tmp_path / "raw.csv"
    assert run_script("predict.py", [f"run_dir={run}", f"input={text}", f"output={out}"]).returncode == 0
    import pandas as pd

    (row,) = pd.read_csv(out).to_dict("records")
    assert len(json.loads(row["tags"])) == 11  # Varn is a river . Then Tolk , far away .
    for entity in json.loads(row["entities"]):
        assert text.read_text()[entity["start"]:entity["end"]] == entity["text"]

    # hf_model/: a stock BigBirdForTokenClassification; pipeline agrees with our model token by token
    hf = run / "hf_model"
    assert type(AutoModelForTokenClassification.from_pretrained(hf)).__name__ == "BigBirdForTokenClassification"
    tagger = pipeline("token-classification", model=str(hf), ignore_labels=[], device="cpu")
    short = NerCorpus(NerSpec(min_words=20, max_words=40, mention_after=5)).split("validation", 20)
    module.eval()
    for doc in short:
        sentence = " ".join(doc["tokens"])
        encoded = module.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            probs = module(encoded["input_ids"], encoded["attention_mask"]).softmax(-1)[0]
        tokens = tagger(sentence)
        assert len(tokens) == encoded["input_ids"].shape[1] - 2
        for token in tokens:
            assert token["entity"] == module.id2label[int(probs[token["index"]].argmax())]
            assert token["score"] == pytest.approx(float(probs[token["index"]].max()), abs=1e-5)


def files_overrides(tmp: Path, train_file: Path, **extra: object) -> list[str]:
    values = {"data": "files", "data.train_file": train_file, "model.problem_type": "token_classification",
              "head": "token", "test": "false", "model.tokenizer_vocab_size": 60, **extra}
    return [o for o in tiny_overrides(tmp, **values) if not o.startswith("data.spec")]


ROWS = [{"tokens": ["Varn", "is", "a", "river"], "ner_tags": ["B-river", "O", "O", "O"]},
        {"tokens": ["Tolk", "is", "a", "city"], "ner_tags": ["B-city", "O", "O", "O"]}] * 4


@pytest.mark.parametrize(("rows", "needles"), [
    ([*ROWS[:2], {"tokens": ["Tolk", "far"], "ner_tags": ["B-city"]}, *ROWS[2:]],
     ["different lengths (row 3: 2 tokens, 1 tags", "fix those rows"]),
    ([{"tokens": "Varn is a river", "ner_tags": ["B-river"]}] * 4, ["holds str, not a list (row 1)", "data.tokens_column"]),
    ([*ROWS, {"tokens": [], "ner_tags": []}], ["empty token list in 1 row(s)", "rows 9"]),
], ids=["uneven", "not-a-list", "empty"])
def test_tagging_bad_training_rows_are_one_line(tmp_path, rows, needles):
    from tests.data.test_data_errors import assert_one_line_error

    data = write_jsonl(tmp_path / "train.jsonl", rows)
    result = run_script("train.py", files_overrides(tmp_path, data, debug="fdr"))
    assert_one_line_error(result, *needles, tmp_path=tmp_path)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_an_unknown_tag_at_predict_is_one_line(tmp_path):
    """Gold tags in a predict input that the model does not know: the file and the model do not match."""
    from tests.data.test_data_errors import assert_one_line_error

    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    result = run_script("train.py", files_overrides(tmp_path, good))
    assert result.returncode == 0, result.stderr[-3000:]
    labelled = write_jsonl(tmp_path / "labelled.jsonl", [{"tokens": ["Varn", "sails"], "ner_tags": ["B-ship", "O"]}])
    out = tmp_path / "out.jsonl"
    result = run_script("predict.py", [f"run_dir={tmp_path / 'run'}", f"input={labelled}", f"output={out}"])
    assert_one_line_error(result, "tag 'B-ship' in row 1", "is not one of the model's tags", tmp_path=tmp_path / "p")
    assert not out.exists()
