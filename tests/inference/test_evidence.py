"""predict.py evidence=K: gradient x input spans, character offsets, the HTML page (in Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest
import torch

from bigbird_ft.inference.evidence import best_spans, document_windows, token_scores
from bigbird_ft.inputs.spec import InputSpec
from tests.conftest import in_ci, run_script

TEXT = "alpha beta  gamma delta epsilon zeta eta theta iota kappa lambda mu"


def offsets_of(text: str) -> list[tuple[int, int]]:
    """One token per word, offsets as a fast tokenizer gives them (a leading space included)."""
    spans, cursor = [], 0
    for word in text.split():
        start = text.index(word, cursor)
        spans.append((max(cursor, start - 1), start + len(word)))
        cursor = start + len(word)
    return spans


def test_best_spans_are_the_top_non_overlapping_windows_as_exact_character_spans():
    offsets = offsets_of(TEXT)
    scores = torch.tensor([0.0, 0, 1, 2, 0, 0, 0, 0, 3, 3, 0, 0])
    spans = best_spans(scores, offsets, TEXT, k=2, window=2)
    assert [s["text"] for s in spans] == ["iota kappa", "gamma delta"]
    assert [s["score"] for s in spans] == [6.0, 3.0]
    for span in spans:
        assert TEXT[span["start"] : span["end"]] == span["text"]
    # fewer tokens than the window: one span over everything
    assert best_spans(torch.tensor([1.0, 2.0]), offsets[:2], TEXT, k=3, window=16)[0]["text"] == "alpha beta"


def test_chunked_windows_cover_every_token(tiny_tokenizer):
    text = " ".join(["lorem ipsum dolor sit amet"] * 80)
    offsets, inputs, positions = document_windows(tiny_tokenizer, text, InputSpec(max_length=64, pad_to_multiple_of=16, stride=16), "chunk")
    covered = set()
    for x, read in zip(inputs, positions, strict=True):
        assert len(x) <= 64 and x[0] == tiny_tokenizer.cls_token_id and x[-1] == tiny_tokenizer.sep_token_id
        assert len(read) == len(x) - 2 and read == list(range(read[0], read[0] + len(read)))
        covered.update(read)
    assert covered == set(range(len(offsets))) and len(inputs) > 3


def test_token_scores_are_gradient_times_input_of_the_predicted_log_odds(make_classifier, tiny_tokenizer):
    """Against an independent computation: HF's encoder fed inputs_embeds, autograd on them."""
    module = make_classifier("hf_full", "mean").eval()
    ids = tiny_tokenizer("the quick brown fox jumps over the lazy dog " * 3)["input_ids"]
    scores = token_scores(module, [ids], [list(range(len(ids) - 2))], len(ids) - 2, "mean")

    embeddings = module.encoder.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    mask = torch.ones(1, len(ids), dtype=torch.long)
    hidden = module.encoder(inputs_embeds=embeddings, attention_mask=mask).last_hidden_state
    logits = (module.head(hidden, mask) / module.model.temperature)[0]
    predicted = int(logits.argmax())
    others = torch.cat([logits[:predicted], logits[predicted + 1 :]])
    (logits[predicted] - others.logsumexp(0)).backward()  # the predicted class's log-odds
    expected = (embeddings.grad * embeddings).sum(-1)[0, 1:-1].detach()
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-4)
    assert all(p.requires_grad for p in module.parameters())  # restored after the pass


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec

    rows = SyntheticCorpus(SyntheticSpec(seed=7, min_words=60, max_words=700)).split("test", 6)
    path = tmp_path_factory.mktemp("evidence-docs") / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


@pytest.mark.parametrize("long_docs", ["truncate", "chunk"])
def test_predict_writes_k_exact_spans_per_document(trained_run, documents, tmp_path, long_docs):
    path, rows = documents
    out = tmp_path / "preds.csv"
    result = run_script("predict.py", [f"run_dir={trained_run}", f"input={path}", f"output={out}", "evidence=3",
                                       "max_length=256", f"long_docs={long_docs}", "chunk_stride=32",
                                       f"hydra.run.dir={tmp_path / 'pred'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out)
    for row, cell in zip(rows, frame["evidence"], strict=True):
        spans = json.loads(cell)
        assert len(spans) == 3
        for span in spans:
            assert row["text"][span["start"] : span["end"]] == span["text"] and span["text"].strip()
        scores = [s["score"] for s in spans]
        assert scores == sorted(scores, reverse=True)
        edges = sorted((s["start"], s["end"]) for s in spans)
        assert all(a[1] <= b[0] for a, b in zip(edges, edges[1:], strict=False))


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_html_page_renders_the_spans_in_chromium(trained_run, documents, tmp_path):
    browser = chromium()
    if browser is None:
        if in_ci():
            pytest.fail("chromium is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium here (.ci/run installs it)")
    path, rows = documents
    page, out = tmp_path / "evidence.html", tmp_path / "preds.jsonl"
    result = run_script("predict.py", [f"run_dir={trained_run}", f"input={path}", f"output={out}", "evidence=2",
                                       f"evidence_html={page}", f"hydra.run.dir={tmp_path / 'pred'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    # the DOM after Chromium parsed and laid out the page: every span is a <mark> with its exact text
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert dom.returncode == 0, dom.stderr[-2000:]
    from html.parser import HTMLParser

    class Marks(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside, self.texts, self.headings = False, [], []

        def handle_starttag(self, tag, attrs):
            self.inside = tag == "mark"

        def handle_endtag(self, tag):
            self.inside = False

        def handle_data(self, data):
            if self.inside:
                self.texts.append(data)

    parser = Marks()
    parser.feed(dom.stdout)
    expected = [span["text"] for p in predictions for span in sorted(p["evidence"], key=lambda s: s["start"])]
    assert parser.texts == expected
    assert all(f"label {p['label']}" in dom.stdout for p in predictions)


@pytest.mark.parametrize(("override", "message"), [
    ("evidence=0", "error: evidence=0 is not a positive whole number of spans: fix evidence"),
    ("evidence_method=saliency", "error: evidence_method=saliency is not one of auto, gradient, pooling: "
                                 "fix evidence_method"),
    ("evidence=two", "error: evidence=two is not a positive whole number of spans: fix evidence"),
    ("evidence_html=/no/such/folder/e.html",
     "error: the folder of evidence_html=/no/such/folder/e.html does not exist: create it or fix evidence_html"),
])
def test_bad_evidence_options_are_one_line_and_write_nothing(documents, tmp_path, override, message):
    path, _ = documents
    out = tmp_path / "preds.csv"
    result = run_script("predict.py", [f"ckpt_path={tmp_path / 'never-read.ckpt'}", f"input={path}",
                                       f"output={out}", override, f"hydra.run.dir={tmp_path / 'pred'}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]
    assert not out.exists()


@pytest.mark.parametrize(("attention", "head"), [
    ("hf_block_sparse", "cls"), ("block_sparse", "attention"), ("sdpa", "max"), ("hf_full", "pooler"),
    ("block_sparse", "mean"),
])
def test_every_backend_and_head_gives_finite_nonzero_scores(make_classifier, tiny_tokenizer, attention, head):
    module = make_classifier(attention, head).eval()
    text = "the quick brown fox jumps over the lazy dog " * 30
    offsets, inputs, positions = document_windows(tiny_tokenizer, text, InputSpec(max_length=256, pad_to_multiple_of=16, stride=32), "chunk")
    scores = token_scores(module, inputs, positions, len(offsets), "mean")
    assert scores.shape == (len(offsets),) and torch.isfinite(scores).all() and scores.abs().sum() > 0


def test_pooling_evidence_is_the_attention_heads_weights_and_needs_that_head(make_classifier, tiny_tokenizer):
    from bigbird_ft.errors import UserError
    from bigbird_ft.inference.evidence import resolve_method

    module = make_classifier("hf_full", "attention").eval()
    ids = tiny_tokenizer("the quick brown fox jumps over the lazy dog " * 5)["input_ids"]
    scores = token_scores(module, [ids], [list(range(len(ids) - 2))], len(ids) - 2, "mean", method="pooling")
    captured = {}
    hook = module.head.register_forward_pre_hook(lambda _m, args: captured.update(hidden=args[0], mask=args[1]))
    with torch.no_grad():
        module(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    hook.remove()
    weights = (module.head.scorer(captured["hidden"]).squeeze(-1)).softmax(-1)[0, 1:-1]
    torch.testing.assert_close(scores, weights, atol=1e-6, rtol=1e-5)
    assert resolve_method(module, "auto") == "pooling"
    cls = make_classifier("block_sparse", "cls")
    assert resolve_method(cls, "auto") == "gradient"
    with pytest.raises(UserError, match="evidence_method=pooling needs a head with pooling weights"):
        resolve_method(cls, "pooling")
