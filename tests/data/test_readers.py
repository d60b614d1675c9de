"""reader=: how a document longer than one window becomes model inputs, and how the network combines them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bigbird_ft.errors import UserError
from bigbird_ft.inputs.spec import InputSpec, Reader
from tests.conftest import TINY_MODEL, run_script, tiny_overrides

CLS, SEP = 1, 2


def spec(name: str, max_length: int = 64, **reader) -> InputSpec:
    return InputSpec(max_length=max_length, pad_to_multiple_of=16, reader=Reader(name=name, **reader))


def test_truncate_reads_the_first_window_and_head_tail_the_two_ends():
    content = list(range(100, 300))
    [(positions, ids)] = spec("truncate", max_length=512, window=32).document_inputs(content, CLS, SEP)
    assert ids == [CLS, *range(100, 130), SEP] and positions == list(range(30))
    [(positions, ids)] = spec("head_tail", head_tokens=5, tail_tokens=7).document_inputs(content, CLS, SEP)
    assert ids == [CLS, *range(100, 105), *range(293, 300), SEP]
    assert positions == [*range(5), *range(193, 200)]
    # a document shorter than head + tail is read whole, once
    [(positions, ids)] = spec("head_tail", head_tokens=5, tail_tokens=7).document_inputs(content[:9], CLS, SEP)
    assert ids == [CLS, *range(100, 109), SEP]


@pytest.mark.parametrize("name,stride", [("chunks", 0), ("chunks", 4), ("hierarchical", 0)])
def test_windows_cover_the_first_max_length_tokens_once_or_with_the_stride(name, stride):
    inputs = spec(name, max_length=130, window=34, stride=stride)  # 32 content tokens per window, 128 read
    content = list(range(1000, 1300))
    read = inputs.document_inputs(content, CLS, SEP)
    covered = sorted(p for positions, _ in read for p in positions)
    starts = [positions[0] for positions, _ in read]
    # every token of the first 128 read once, and the stride's tokens once more: none dropped or duplicated
    shared = [t for a in starts[1:] for t in range(a, a + stride)]
    assert covered == sorted([*range(128), *shared]) and len(read) == inputs.max_segments
    assert all(ids == [CLS, *(content[p] for p in positions), SEP] for positions, ids in read)
    assert all(positions == list(range(positions[0], positions[0] + len(positions))) for positions, _ in read)
    assert all(b - a == 32 - stride for a, b in zip(starts, starts[1:], strict=False))
    # a short document: only its windows, none empty
    assert [len(p) for p, _ in inputs.document_inputs(content[:40], CLS, SEP)] == [32, 40 - (32 - stride)]


def test_chunks_train_on_windows_and_evaluate_whole_documents(tiny_tokenizer):
    inputs = spec("chunks", max_length=258, window=66)
    texts = ["the quick brown fox jumps over the lazy dog " * 40, "a short one"]
    train = inputs.read(tiny_tokenizer, texts, train=True)
    evaluate = inputs.read(tiny_tokenizer, texts)
    assert [row for row, _, _ in train].count(0) == 4 and [row for row, _, _ in train].count(1) == 1
    assert all(isinstance(ids[0], int) for _, ids, _ in train)
    assert len(evaluate) == 2 and len(evaluate[0][1]) == 4 and isinstance(evaluate[0][1][0], list)


def test_segmented_batches_pad_windows_to_the_block_and_mark_missing_windows(tiny_tokenizer):
    collate = spec("hierarchical").collator(tiny_tokenizer)
    batch = collate([{"input_ids": [[CLS, 5, 6, SEP], [CLS, 7, SEP]], "labels": 1, "row": 0},
                     {"input_ids": [[CLS, 8, 9, 10, 11, 12, SEP]], "labels": 0, "row": 1}])
    assert batch["input_ids"].shape == (2, 2, 16)
    assert batch["attention_mask"].sum(-1).tolist() == [[4, 3], [7, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["row"].tolist() == [0, 1]


def reader_classifier(tiny_tokenizer, name: str, problem_type: str = "single_label_classification",
                      num_labels: int = 3, head: str = "mean"):
    from bigbird_ft.models.factory import build_classifier

    torch.manual_seed(0)
    return build_classifier(
        model=TINY_MODEL, attention={"name": "sdpa"}, head={"name": head, "dropout": 0.0},
        id2label={i: f"l{i}" for i in range(num_labels)}, tokenizer=tiny_tokenizer, optim={"lr": 1e-3},
        problem_type=problem_type,
        data={"max_length": 256, "pad_to_multiple_of": 16, "reader": {"name": name, "window": 64}}).eval()


def documents_batch(module, texts):
    features = [{"input_ids": ids} for _, ids, _ in module.inputs.read(module.tokenizer, texts)]
    return module.inputs.collator(module.tokenizer)(features)


def test_chunks_logits_are_the_mean_of_the_window_logits(tiny_tokenizer):
    module = reader_classifier(tiny_tokenizer, "chunks")
    texts = ["the quick brown fox jumps over the lazy dog " * 20, "jumps over " * 3]
    batch = documents_batch(module, texts)
    with torch.no_grad():
        combined = module(batch["input_ids"], batch["attention_mask"])
        for doc, windows in enumerate(module.inputs.read(module.tokenizer, texts)[i][1] for i in range(2)):
            flat = module.inputs.collator(module.tokenizer)([{"input_ids": w} for w in windows])
            expected = module(flat["input_ids"], flat["attention_mask"]).mean(0)
            torch.testing.assert_close(combined[doc], expected, rtol=1e-5, atol=1e-5)


def test_hierarchical_segments_restart_their_positions(tiny_tokenizer):
    """Each segment is encoded as an input of its own ([CLS] at position 0): the segment vectors the document
    layer receives equal the mean token vectors of each segment encoded alone."""
    module = reader_classifier(tiny_tokenizer, "hierarchical")
    text = "the quick brown fox jumps over the lazy dog " * 30
    [(_, windows, _)] = module.inputs.read(module.tokenizer, [text])
    assert len(windows) > 2
    captured = {}
    hook = module.model.document_layer.register_forward_pre_hook(lambda _m, args: captured.update(vectors=args[0]))
    with torch.no_grad():
        module(**documents_batch(module, [text]))
        hook.remove()
        for index, window in enumerate(windows):
            ids = torch.tensor([window])
            hidden = module.backend.encode(module.encoder, ids, torch.ones_like(ids))
            torch.testing.assert_close(captured["vectors"][0, index], hidden[0].mean(0), rtol=1e-4, atol=1e-5)


def test_hierarchical_document_logits_do_not_depend_on_the_batch(tiny_tokenizer):
    module = reader_classifier(tiny_tokenizer, "hierarchical")
    long, short = "the quick brown fox jumps over the lazy dog " * 30, "the lazy dog sleeps"
    with torch.no_grad():
        together = module(**{k: v for k, v in documents_batch(module, [short, long]).items()})
        alone = module(**documents_batch(module, [short]))
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["chunks", "hierarchical"])
def test_short_windows_are_encoded_apart_cut_to_their_length_without_changing_the_logits(tiny_tokenizer, name):
    """A document's last window (and a short document) is encoded cut to its own length, as the estimate
    prices it; the logits equal those of the batch encoded padded as the collator made it."""
    from bigbird_ft.training.estimate import segment_lengths, window_groups

    module = reader_classifier(tiny_tokenizer, name)
    texts = ["the quick brown fox jumps over the lazy dog " * 20, "jumps over " * 3]
    batch = documents_batch(module, texts)
    shapes = []
    encode = module.backend.encode
    module.backend.encode = lambda encoder, ids, mask: shapes.append(tuple(ids.shape)) or encode(encoder, ids, mask)
    with torch.no_grad():
        split = module(batch["input_ids"], batch["attention_mask"])
        module.backend.encode = lambda encoder, ids, mask: encode(encoder, ids, mask)
        present = batch["attention_mask"].any(-1)
        hidden = encode(module.encoder, batch["input_ids"][present], batch["attention_mask"][present])
    padded = batch["input_ids"].shape[-1]
    lengths = batch["attention_mask"][present].sum(-1).tolist()
    short = [n for n in lengths if n <= padded // 2]
    assert short and len(short) < len(lengths)
    cut = -(-max(short) // 16) * 16
    assert shapes == [(len(lengths) - len(short), padded), (len(short), cut)]
    # the estimate prices the same two groups
    features = [{"input_ids": ids} for _, ids, _ in module.inputs.read(module.tokenizer, texts)]
    windows = segment_lengths({"input_ids": [f["input_ids"] for f in features]})
    assert window_groups([[0, 1]], [max(w) for w in windows], 16, [len(w) for w in windows], windows) == [
        [(len(lengths) - len(short), padded), (len(short), cut)]]
    # one group, padded as collated: the same logits
    with torch.no_grad():
        module.model.encode_windows = lambda ids, mask: encode(module.encoder, ids, mask)
        together = module(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(split, together, rtol=1e-5, atol=1e-5)
    assert hidden.shape[1] == padded


@pytest.mark.parametrize("problem_type,labels", [
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
    ("regression", torch.tensor([0.5, -1.0])),
])
@pytest.mark.parametrize("name", ["chunks", "hierarchical", "head_tail"])
def test_every_reader_trains_multi_label_and_regression(tiny_tokenizer, name, problem_type, labels):
    module = reader_classifier(tiny_tokenizer, name, problem_type, num_labels=labels.shape[1] if labels.dim() > 1 else 1).train()
    batch = documents_batch(module, ["the quick brown fox jumps over the lazy dog " * 25, "a lazy dog"])
    loss = module.loss(module(batch["input_ids"], batch["attention_mask"]), labels)
    loss.backward()
    assert torch.isfinite(loss) and module.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_bad_reader_settings_are_one_line(tiny_tokenizer):
    with pytest.raises(UserError, match="reader=paragraphs is not one of"):
        Reader.from_config({"name": "paragraphs"})
    with pytest.raises(UserError, match="reader.aggregation=median"):
        Reader.from_config({"name": "chunks", "aggregation": "median"})
    with pytest.raises(UserError, match="reader.stride=64 must be in"):
        spec("chunks", window=34, stride=64).check(windows=False)
    with pytest.raises(UserError, match="token classification"):
        reader_classifier(tiny_tokenizer, "chunks", "token_classification", head="token")
    with pytest.raises(UserError, match="head=pooler"):
        reader_classifier(tiny_tokenizer, "hierarchical", head="pooler")


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["truncate", "head_tail", "chunks", "hierarchical"])
def test_each_reader_trains_predicts_explains_and_exports(tmp_path, reader):
    """train.py reader=X, then predict (the run's reader, automatically) with evidence, and the exported
    folder read back by load_exported gives predict's probabilities."""
    from bigbird_ft.inference.evidence import explain
    from bigbird_ft.inference.export import load_exported
    from bigbird_ft.inference.predict import Predictor
    from bigbird_ft.models.checkpoints import find_checkpoint
    from bigbird_ft.models.factory import load_classifier

    keys = {"head_tail": ["reader.head_tokens=40", "reader.tail_tokens=86"]}.get(reader, ["reader.window=128"])
    result = run_script("train.py", [*tiny_overrides(tmp_path), f"reader={reader}", *keys])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= saved["test/acc"] <= 1.0
    module = load_classifier(find_checkpoint(run_dir=run))
    assert module.inputs.reader.name == reader
    texts = ["north " * 300 + "the end", "a short document about the south", "west " * 150]
    predictor = Predictor(module, module.inputs, trainer={"accelerator": "cpu"})
    documents, columns = predictor.predict(pd.DataFrame({"text": texts}), "test")
    assert len(columns["label"]) == 3
    exported = load_exported(run / "hf_model")
    assert exported.inputs.reader == module.inputs.reader
    _, again = Predictor(exported, exported.inputs, trainer={"accelerator": "cpu"}).predict(
        pd.DataFrame({"text": texts}), "test")
    for name in columns:
        if name.startswith("prob_"):
            assert abs(columns[name] - again[name]).max() < 1e-5
    spans = explain(module, texts, 1, 8, module.inputs, "truncate", "mean", "gradient")
    for text, [span] in zip(texts, spans, strict=True):
        assert span["text"] == text[span["start"]:span["end"]] and span["text"]
    if reader == "chunks":  # the last window of the long document is read, so evidence may point there
        assert module.inputs.max_segments > 1


@pytest.mark.slow
def test_predict_py_uses_the_runs_reader_and_estimate_prints_its_cost(tmp_path):
    args = [*tiny_overrides(tmp_path), "reader=hierarchical", "reader.window=128"]
    result = run_script("train.py", [*args, "estimate=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Estimate (reader=hierarchical)" in result.stdout + result.stderr
    report = json.loads((tmp_path / "run" / "estimate.json").read_text())
    assert report["reader"] == "hierarchical" and report["inputs_per_epoch"] > report["documents_per_epoch"]
    result = run_script("train.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["north " * 400, "south"]}).to_csv(source, index=False)
    out = tmp_path / "out.jsonl"
    result = run_script("predict.py", [f"run_dir={tmp_path / 'run'}", f"input={source}", f"output={out}", "evidence=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["evidence"] for r in rows)
    result = run_script("predict.py", [f"run_dir={tmp_path / 'run'}", f"input={source}", f"output={out}",
                                       "long_docs=chunk"])
    assert result.returncode != 0 and "reader=hierarchical reads them itself" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cut_documents_are_those_longer_than_what_the_reader_reads(tiny_tokenizer):
    from bigbird_ft.tasks import task_for

    inputs = spec("chunks", max_length=130, window=34)  # windows of 32 content tokens, 128 read per document
    long, medium = "the quick brown fox jumps over the lazy dog " * 40, "the quick brown fox jumps over the lazy dog " * 2
    n_long, n_medium = (len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (long, medium))
    assert n_long > 128 and 32 < n_medium <= 128
    for train in (True, False):
        encode = task_for("single_label_classification").batch_encoder(tiny_tokenizer, inputs, {"a": 0}, train=train)
        out = encode({"text": [long, medium], "label": ["a", "a"]}, [0, 1])
        assert {row for row, cut in zip(out["row"], out["cut"], strict=True) if cut} == {0}
        assert out["row"].count(1) == (-(-n_medium // 32) if train else 1)  # the medium one: its windows, not cut
