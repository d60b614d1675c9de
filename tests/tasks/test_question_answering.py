"""model.problem_type=question_answering: windows and offsets, the question never an answer, SQuAD metrics,
stock export, train -> predict, bad rows."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import torch

from bigbird_ft.errors import UserError
from bigbird_ft.inputs.spec import InputSpec
from bigbird_ft.tasks import task_for
from bigbird_ft.tasks.base import Documents
from bigbird_ft.tasks.question_answering import (
    SquadMetrics,
    answer_positions,
    best_spans,
    encode_pairs,
    window_features,
)
from tests.conftest import TINY_MODEL, run_script, tiny_overrides

QA = task_for("question_answering")


def long_context(n_words: int = 120) -> str:
    return " ".join(f"w{i % 23}ab" if i % 7 else f"Kel{i}" for i in range(n_words))


def windows_of(tokenizer, question: str, context: str, spec: InputSpec) -> list[dict]:
    encoded, pairs = encode_pairs(tokenizer, [question], [context], spec, [0], "test")
    assert set(pairs) == {0}
    return [window_features(encoded, i, context) for i in range(len(pairs))]


def test_every_context_token_is_in_a_window_and_an_answer_across_a_window_edge_is_found(tiny_tokenizer):
    context = long_context()
    spec = InputSpec(64, 16, stride=16)
    windows = windows_of(tiny_tokenizer, "which river ?", context, spec)
    assert len(windows) > 3 and all(len(w["input_ids"]) <= 64 for w in windows)
    # every context token (its character span) is in some window: none dropped between windows
    full = tiny_tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    seen = {(s, e) for w in windows for s, e in zip(w["token_starts"], w["token_ends"], strict=True) if s >= 0}
    assert {tuple(o) for o in full if o[1] > o[0]} <= seen
    # an answer that starts in window 0 and ends past its last token: window 0 says [CLS], window 1 holds it
    first = windows[0]
    last_token = max(p for p, s in enumerate(first["token_starts"]) if s >= 0)
    start_char = first["token_starts"][last_token - 1]
    start_char += len(context[start_char:]) - len(context[start_char:].lstrip())  # a piece's offset holds its space
    words_after = re.compile(r"\S+").finditer(context, first["token_ends"][last_token])
    end_char = next(words_after).end()
    assert answer_positions(first["token_starts"], first["token_ends"], start_char, end_char) == (0, 0)
    second = windows[1]
    s, e = answer_positions(second["token_starts"], second["token_ends"], start_char, end_char)
    assert 0 < s <= e and second["token_starts"][s] <= start_char and second["token_ends"][e] >= end_char
    # decoding: logits that point at those tokens give the answer as a span of the context
    logits = torch.full((len(second["input_ids"]), 2), -5.0)
    logits[s, 0], logits[e, 1] = 8.0, 8.0
    features = [{"row": torch.tensor(0), "logits": torch.full((len(w["input_ids"]), 2), 0.0),
                 "char_starts": torch.tensor(w["char_starts"]), "char_ends": torch.tensor(w["char_ends"])}
                for w in windows]
    features[1]["logits"] = logits
    columns = QA.document_predictions(features, Documents([context], questions=["which river ?"]), "mean",
                                      {0: "start", 1: "end"}, 0.5, inputs=spec, top_k=3)
    answer, start, end = columns["answer"][0], columns["start"][0], columns["end"][0]
    assert context[start:end] == answer and start <= start_char and end >= end_char
    assert answer == context[context.rfind(" ", 0, start_char) + 1:end_char]  # whole words
    assert len(columns["answers"][0]) == 3 and all(context[a["start"]:a["end"]] == a["answer"]
                                                   for a in columns["answers"][0])


def test_question_tokens_are_never_answers(tiny_tokenizer):
    from bigbird_ft.models.factory import build_classifier

    module = build_classifier(model=TINY_MODEL, attention={"name": "hf_full"}, head={"name": "span"},
                              id2label={0: "start", 1: "end"}, tokenizer=tiny_tokenizer,
                              problem_type="question_answering",
                              data={"max_length": 128, "pad_to_multiple_of": 16, "chunk_stride": 32}).eval()
    # the head's bias made to favour the question: the network still pushes question logits down by 1e6
    with torch.no_grad():
        module.head.qa_classifier.qa_outputs.bias.fill_(50.0)
    window = windows_of(tiny_tokenizer, "what does the pilot hold here ?", long_context(20), module.inputs)[0]
    ids = torch.tensor([window["input_ids"]])
    with torch.no_grad():
        logits = module(ids, torch.ones_like(ids))
    question_end = window["input_ids"].index(tiny_tokenizer.sep_token_id)
    assert (logits[0, 1:question_end + 1] < -1e5).all() and (logits[0, question_end + 1:-1] > -1e5).all()
    # decoding masks everything but the context even when a question token has the largest logit
    raw = torch.zeros(1, len(window["input_ids"]), 2)
    raw[0, 2] = 100.0
    context = torch.tensor([window["char_starts"]]) >= 0
    _, starts, ends, _ = best_spans(raw[..., 0], raw[..., 1], context, 10, null_answers=False, k=5)
    assert context[0, starts[0]].all() and context[0, ends[0]].all()


def squad_reference(prediction: str, gold: list[str]) -> tuple[float, float]:
    """SQuAD v1.1's evaluation, written out: lower case, no punctuation, no articles, one space."""

    def normal(text: str) -> list[str]:
        text = "".join(c for c in text.lower() if c not in set(string.punctuation))
        return re.sub(r"\b(a|an|the)\b", " ", text).split()

    def f1(pred: list[str], truth: list[str]) -> float:
        common = sum((Counter(pred) & Counter(truth)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(truth)
        return 2 * precision * recall / (precision + recall)

    return (max(float(normal(prediction) == normal(g)) for g in gold),
            max(f1(normal(prediction), normal(g)) for g in gold))


def test_squad_metrics_match_a_direct_computation():
    contexts = ["The Eiffel Tower! stands in Paris.", "A big red dog barked at the cat."]
    gold = [["Eiffel Tower", "the tower"], ["red dog"]]
    # two questions, the first in two windows: its best window says "The Eiffel Tower!", the second "big red dog"
    metric = SquadMetrics(max_answer_length=10, null_answers=False)
    metric.references = list(zip(contexts, gold, strict=True))
    char_starts = torch.tensor([[-1, 0, 4, 11, -1], [-1, 0, 4, 11, -1], [-1, 2, 6, 10, -1]])
    char_ends = torch.tensor([[-1, 3, 10, 17, -1], [-1, 3, 10, 17, -1], [-1, 5, 9, 13, -1]])
    logits = torch.zeros(3, 5, 2)
    logits[0, 1, 0], logits[0, 3, 1] = 9.0, 9.0   # "The Eiffel Tower!", confident
    logits[1, 2, 0], logits[1, 2, 1] = 2.0, 2.0   # "Eiffel", less so: loses
    logits[2, 1, 0], logits[2, 3, 1] = 9.0, 9.0   # "big red dog"
    metric.update(logits, torch.tensor([0, 0, 1]), char_starts, char_ends)
    values = metric.compute()
    expected = [squad_reference("The Eiffel Tower!", gold[0]), squad_reference("big red dog", gold[1])]
    assert expected == [(1.0, 1.0), (0.0, pytest.approx(0.8))]
    assert values["exact_match"].item() == pytest.approx(sum(e for e, _ in expected) / 2)
    assert values["f1"].item() == pytest.approx(sum(f for _, f in expected) / 2)


def test_export_is_a_stock_question_answering_model_with_the_same_logits(tiny_tokenizer, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    from bigbird_ft.inference.export import export_hf_model, load_exported
    from bigbird_ft.models.factory import build_classifier

    module = build_classifier(model=TINY_MODEL, attention={"name": "sdpa"}, head={"name": "span"},
                              id2label={0: "start", 1: "end"}, tokenizer=tiny_tokenizer,
                              problem_type="question_answering",
                              data={"max_length": 256, "pad_to_multiple_of": 16, "max_answer_length": 12}).eval()
    export_hf_model(module, tmp_path / "hf")
    stock = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "hf").eval()
    assert type(stock).__name__ == "BigBirdForQuestionAnswering"
    encoded = tiny_tokenizer(["what does the pilot hold ?", "who ?"], [long_context(40), long_context(15)],
                             padding=True, pad_to_multiple_of=16, return_tensors="pt")
    with torch.no_grad():
        ours = module(encoded["input_ids"], encoded["attention_mask"])
        theirs = stock(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    real = encoded["attention_mask"].bool()
    assert torch.allclose(ours[..., 0][real], theirs.start_logits[real], atol=1e-4)
    assert torch.allclose(ours[..., 1][real], theirs.end_logits[real], atol=1e-4)
    again = load_exported(tmp_path / "hf")
    assert again.problem_type == "question_answering" and again.inputs.max_answer_length == 12
    with torch.no_grad():
        assert torch.allclose(again(encoded["input_ids"], encoded["attention_mask"]), ours, atol=1e-5)


def qa_overrides(tmp: Path, **extra: object) -> list[str]:
    values = {key.split("=", 1)[0]: key.split("=", 1)[1] for key in tiny_overrides(tmp)}
    for key in ("model", "data.spec.min_words", "data.spec.max_words"):
        values.pop(key)
    values.update({"data.spec.num_train": 32, "data.spec.num_validation": 8, "data.spec.num_test": 8,
                   "data.spec.min_words": 90, "data.spec.max_words": 160, "data.spec.answer_after": 60,
                   "data.spec.window_words": 15,
                   "data.max_length": 128, "data.chunk_stride": 32, "model.block_size": 16})
    values.update({k: str(v) for k, v in extra.items()})
    return ["experiment=qa_longrange", *(f"{k}={v}" for k, v in values.items())]


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qa")
    result = run_script("train.py", qa_overrides(tmp))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def qa_questions(tmp_path: Path, n: int) -> tuple[list[dict], Path]:
    from bigbird_ft.data.synthetic_qa import QaCorpus, QaSpec

    rows = QaCorpus(QaSpec(min_words=90, max_words=160, answer_after=60)).split("test", n)
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"id": r["id"], "question": r["question"], "context": r["context"]}) + "\n"
                              for r in rows))
    return rows, source


def test_qa_trains_and_predicts_answers_that_are_spans_of_their_context(qa_run, tmp_path):
    run = qa_run
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/exact_match", "test/f1", "val/f1_best", "val/acc"):
        assert 0.0 <= metrics[key] <= 1.0
    rows, source = qa_questions(tmp_path, 5)
    out = tmp_path / "answers.jsonl"
    result = run_script("predict.py", [f"run_dir={run}", f"input={source}", f"output={out}", "top_k=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["id"] for a in answers] == [r["id"] for r in rows]
    for answer, row in zip(answers, rows, strict=True):
        assert row["context"][answer["start"]:answer["end"]] == answer["answer"] != ""
        assert 0 < answer["score"] <= 1 and len(answer["answers"]) == 2
        assert answer["answers"][0]["answer"] == answer["answer"]
        assert "?" not in answer["answer"]
    # the server's worker (serve.py) answers the same pairs as predict.py, batched with each other
    from bigbird_ft.inference.serve import ClassifierAPI, PredictRequest, ServeSettings
    from bigbird_ft.models.checkpoints import find_checkpoint

    api = ClassifierAPI(ServeSettings(str(find_checkpoint(str(run), None))), max_batch_size=4)
    api.setup("cpu")
    served = api.answer([PredictRequest([r["context"] for r in rows[:3]], questions=[r["question"] for r in rows[:3]],
                                        single=False),
                         PredictRequest([rows[3]["context"]], questions=[rows[3]["question"]])])
    for got, want in zip([*served[0]["predictions"], served[1]], answers[:4], strict=True):
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    with pytest.raises(UserError, match="this model answers questions"):
        api.answer([PredictRequest([rows[0]["context"]])])


@pytest.mark.slow
def test_ddp_predict_gives_each_question_one_answer_as_one_process_does(qa_run, tmp_path):
    rows, source = qa_questions(tmp_path, 9)
    outputs = {}
    for name, extra in (("one", []), ("ddp", ["devices=2", "strategy=ddp"])):
        out = tmp_path / f"{name}.jsonl"
        result = run_script("predict.py", [f"run_dir={qa_run}", f"input={source}", f"output={out}", "accelerator=cpu",
                                           "batch_size=2", f"hydra.run.dir={tmp_path / name}", *extra])
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["id"] for a in outputs["ddp"]] == [r["id"] for r in rows]
    for one, ddp in zip(outputs["one"], outputs["ddp"], strict=True):
        assert (one["answer"], one["start"], one["end"]) == (ddp["answer"], ddp["start"], ddp["end"])


def test_a_served_question_goes_with_its_text():
    from bigbird_ft.inference.serve import MAX_EVIDENCE, BadRequest, check_request, read_body

    request = check_request(read_body(b'{"questions": ["who?", "why?"], "texts": ["a", "b"]}', 2**20))
    assert (request.questions, request.texts, request.single) == (["who?", "why?"], ["a", "b"], False)
    for body, message in ((b'{"question": "who?", "texts": ["a"]}', '"question" goes with "text"'),
                          (b'{"questions": ["who?"], "texts": ["a", "b"]}', '"questions" must be a list of 2'),
                          (b'{"question": " ", "text": "a"}', '"question" must be a non-empty string')):
        with pytest.raises(BadRequest, match=message):
            check_request(read_body(body, 2**20))
    assert MAX_EVIDENCE > 0


def files_module(tmp_path: Path, rows: list[dict], **keys):
    from bigbird_ft.data.sources import FilesDataModule

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FilesDataModule(train_file=str(train), cache_dir=str(tmp_path / "cache"), **keys)


GOOD = {"question": "who?", "context": "Varn is the pilot.", "answers": {"text": ["Varn"], "answer_start": [0]}}


@pytest.mark.parametrize(
    ("rows", "keys", "needles"),
    [
        ([GOOD, {**GOOD, "answers": {"text": ["pilot"], "answer_start": [3]}}], {},
         ["row 2", "answer_start=3", "'pilot'"]),
        ([GOOD, {**GOOD, "answers": {"text": [], "answer_start": []}}], {}, ["no answer", "data.null_answers=true"]),
        ([{**GOOD, "answers": "Varn"}], {}, ["row 1", "SQuAD's answers"]),
        ([GOOD], {"answers_column": "gold"}, ["column 'gold'", "data.answers_column"]),
    ],
)
def test_bad_question_answering_rows_are_one_line(tmp_path, rows, keys, needles):
    module = files_module(tmp_path, rows, problem_type="question_answering", **keys)
    with pytest.raises(UserError) as err:
        module.prepare_raw()
    assert all(n in str(err.value) for n in needles), str(err.value)
    assert "\n" not in str(err.value)


def test_squad_columns_infer_question_answering_and_a_question_too_long_is_one_line(tmp_path, tiny_tokenizer):
    module = files_module(tmp_path, [GOOD, GOOD])
    module.prepare_raw()
    assert module.problem_type == "question_answering" and module.label_names == ["start", "end"]
    with pytest.raises(UserError, match=r"question of row 1 .* tokens: with max_length=32"):
        encode_pairs(tiny_tokenizer, [" ".join(["word"] * 40)], ["short context"], InputSpec(32, 16, stride=4),
                     [0], "the input")
