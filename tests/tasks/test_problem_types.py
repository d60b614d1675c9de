"""Problem types: label inference and encoding, losses, overfitting every head, the CLIs end to end."""

from __future__ import annotations

import json
import time

import datasets
import pandas as pd
import pytest
import torch

from bigbird_ft.data.datamodule import DocumentDataModule
from bigbird_ft.errors import UserError
from bigbird_ft.inputs.collate import BlockPaddingCollator
from tests.conftest import run_script, tiny_overrides
from tests.tiny_module import MULTI, REGRESSION, SINGLE, build_tiny

HEADS = ["cls", "mean", "max", "pooler", "attention"]


class InMemory(DocumentDataModule):
    """A datamodule over rows given in the test."""

    def __init__(self, splits: dict[str, dict[str, list]], **kwargs) -> None:
        super().__init__(val_fraction=0.25, **kwargs)
        self.splits = splits

    def load_splits(self) -> datasets.DatasetDict:
        return datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in self.splits.items()})


def texts(n: int) -> list[str]:
    return [f"document number {i} " * 3 for i in range(n)]


@pytest.mark.parametrize(
    ("labels", "separator", "expected"),
    [
        (["b", "a", "b", "a"] * 2, None, SINGLE),
        ([1, 0, 1, 0] * 2, None, SINGLE),
        ([1.0, 0.0, 2.0, 0.0] * 3, None, SINGLE),  # integer-valued floats are classes
        ([0.5, 1.25, 3.0, 0.1] * 2, None, REGRESSION),
        ([["x"], ["x", "y"], [], ["z"]] * 2, None, MULTI),
        (["x|y", "y", "", "z|x"] * 2, "|", MULTI),
    ],
)
def test_problem_type_is_inferred_from_labels(labels, separator, expected):
    dm = InMemory({"train": {"text": texts(len(labels)), "label": labels}}, label_separator=separator)
    dm.prepare_raw()
    assert dm.problem_type == expected
    if expected == MULTI:
        assert dm.label_names == ["x", "y", "z"]
    if expected == REGRESSION:
        assert dm.label_names == ["prediction"]


def test_explicit_problem_type_wins_and_bad_labels_fail_in_one_line():
    dm = InMemory({"train": {"text": texts(8), "label": [1, 2, 3, 4] * 2}}, problem_type=REGRESSION)
    dm.prepare_raw()
    assert dm.problem_type == REGRESSION
    bad = InMemory({"train": {"text": texts(4), "label": ["a", "b", "a", "b"]}}, problem_type=REGRESSION)
    with pytest.raises(UserError, match="not a number"):
        bad.prepare_raw()
    with pytest.raises(UserError, match="model.problem_type"):
        InMemory({"train": {"text": texts(2), "label": [1, 2]}}, problem_type="ordinal")


def test_multi_label_unseen_eval_label_is_an_error():
    dm = InMemory({
        "train": {"text": texts(4), "label": ["a|b", "a", "b", "a"]},
        "validation": {"text": texts(2), "label": ["a|c", "b"]},
    }, label_separator="|")
    with pytest.raises(UserError, match=r"\['c'\] appear in the validation split"):
        dm.prepare_raw()


@pytest.mark.parametrize(
    ("labels", "kwargs", "dtype", "first"),
    [
        (["b", "a", "b", "a"] * 2, {}, torch.long, None),
        (["x|y", "y", "", "z|x"] * 2, {"label_separator": "|"}, torch.float32, [1.0, 1.0, 0.0]),
        ([0.5, 1.25, 3.0, 0.1] * 2, {}, torch.float32, 0.5),
    ],
)
def test_labels_reach_the_batch_with_their_type(tiny_tokenizer, labels, kwargs, dtype, first):
    dm = InMemory({"train": {"text": texts(8), "label": labels},
                   "validation": {"text": texts(8), "label": labels}}, pad_to_multiple_of=16, **kwargs)
    dm.prepare_raw()
    dm.connect(tiny_tokenizer, block_size=16, max_positions=4096)
    dm.setup()
    features = [dm.tokenized["validation"][i] for i in range(4)]
    batch = BlockPaddingCollator(tiny_tokenizer, 16)(features)
    assert batch["labels"].dtype == dtype
    if first is not None:
        assert batch["labels"][0].tolist() == pytest.approx(first)


def test_loss_follows_problem_type(tiny_tokenizer):
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    single = build_tiny(tiny_tokenizer, optim={"label_smoothing": 0.1},
                        model_extra={"class_weights": [1.0, 2.0, 3.0]})
    labels = torch.tensor([0, 1, 2, 1])
    expected = torch.nn.functional.cross_entropy(
        logits, labels, weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert torch.allclose(single.loss(logits, labels), expected)
    multi = build_tiny(tiny_tokenizer, problem_type=MULTI, model_extra={"pos_weight": [1.0, 2.0, 0.5]})
    hot = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, hot, pos_weight=torch.tensor([1.0, 2, 0.5]))
    assert torch.allclose(multi.loss(logits, hot), expected)
    reg = build_tiny(tiny_tokenizer, problem_type=REGRESSION)
    assert reg.num_labels == 1 and reg.head.mlp.out_proj.out_features == 1
    target = torch.tensor([0.5, 1.0, -1.0, 2.0])
    assert torch.allclose(reg.loss(logits[:, :1], target), torch.nn.functional.mse_loss(logits[:, 0], target))
    with pytest.raises(UserError, match="has 2 values for 3 labels"):
        build_tiny(tiny_tokenizer, model_extra={"class_weights": [1.0, 2.0]})
    with pytest.raises(UserError, match="applies to multi_label_classification only"):
        build_tiny(tiny_tokenizer, model_extra={"pos_weight": [1.0, 2.0, 3.0]})


def fixed_batch(problem_type: str, vocab: int) -> dict[str, torch.Tensor]:
    """16 random documents of 40-64 tokens (padded to 64) and random targets of the problem type."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (16, 64), generator=g)
    lengths = torch.randint(40, 65, (16,), generator=g)
    mask = (torch.arange(64)[None] < lengths[:, None]).long()
    ids = ids * mask  # pad id 0
    if problem_type == SINGLE:
        labels = torch.arange(16) % 3
    elif problem_type == MULTI:
        labels = torch.randint(0, 2, (16, 4), generator=g).float()
    else:
        labels = torch.randn(16, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def fits(module, batch: dict[str, torch.Tensor]) -> tuple[bool, float]:
    with torch.no_grad():
        out = module.outputs(module(batch["input_ids"], batch["attention_mask"]))
    labels = batch["labels"]
    if module.problem_type == SINGLE:
        score = (out.argmax(-1) == labels).float().mean().item()
        return score >= 0.95, score
    if module.problem_type == MULTI:
        score = ((out >= 0.5).float() == labels).all(-1).float().mean().item()  # subset accuracy
        return score >= 0.95, score
    score = torch.nn.functional.mse_loss(out, labels).item()
    return score <= 0.05, score


@pytest.mark.parametrize("problem_type", [SINGLE, MULTI, REGRESSION])
def test_every_head_overfits_a_fixed_batch(tiny_tokenizer, problem_type):
    """5 heads: a plain torch loop on the module must memorise 16 examples (acc >= 0.95 / MSE <= 0.05)."""
    batch = fixed_batch(problem_type, len(tiny_tokenizer))
    report = {}
    run_heads(tiny_tokenizer, problem_type, batch, report)  # threads: tests/conftest.py shares the cores
    print(problem_type, report)
    assert all(ok for ok, *_ in report.values()), report


def run_heads(tiny_tokenizer, problem_type: str, batch: dict[str, torch.Tensor], report: dict) -> None:
    for head in HEADS:
        torch.manual_seed(0)
        module = build_tiny(tiny_tokenizer, head=head, problem_type=problem_type, num_labels=4 if problem_type == MULTI else 3)
        optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=0.0)
        start, ok, score = time.perf_counter(), False, None
        for step in range(300):
            module.train()
            loss = module.loss(module(batch["input_ids"], batch["attention_mask"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 5 == 4:
                module.eval()
                ok, score = fits(module, batch)
                if ok:
                    break
        report[head] = (ok, round(score, 4), step + 1, round(time.perf_counter() - start, 1))


def write_csvs(tmp_path, make_label) -> tuple:
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec

    rows = SyntheticCorpus(SyntheticSpec(min_words=40, max_words=160)).split("train", 48)
    frame = pd.DataFrame({
        "id": [f"doc{i}" for i in range(len(rows))],
        "text": [r["text"] for r in rows],
        "target": [make_label(i, r) for i, r in enumerate(rows)],
    })
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:40].to_csv(train, index=False)
    frame.iloc[40:].to_csv(test, index=False)
    return train, test


def train_and_predict(tmp_path, train, test, *extra: str) -> tuple[dict, dict, pd.DataFrame]:
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("data.spec")]
    result = run_script("train.py", [
        "data=files", f"data.train_file={train}", f"data.test_file={test}", "data.label_column=target",
        *extra, *overrides,
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "hf_model" / "config.json").read_text())
    out = tmp_path / "preds.csv"
    pred = run_script("predict.py", [f"run_dir={run}", f"input={test}", f"output={out}",
                                     f"hydra.run.dir={tmp_path / 'pred'}"])
    assert pred.returncode == 0, pred.stderr[-3000:]
    return metrics, config, pd.read_csv(out, keep_default_na=False)


def test_multi_label_trains_and_predicts_through_the_clis(tmp_path):
    names = ["alpha", "beta", "gamma"]
    train, test = write_csvs(tmp_path, lambda i, r: "|".join(n for k, n in enumerate(names) if (i >> k) & 1))
    metrics, config, preds = train_and_predict(tmp_path, train, test, "data.label_separator='|'")
    assert {"val/acc", "val/f1", "val/f1_micro", "val/f1_macro", "val/subset_acc", "val/acc_best",
            "test/subset_acc", "test/f1_micro"} <= set(metrics)
    assert metrics["val/acc"] == metrics["val/subset_acc"] and metrics["val/f1"] == metrics["val/f1_macro"]
    assert config["problem_type"] == MULTI and sorted(config["id2label"].values()) == names
    assert list(preds.columns) == ["id", "labels", *[f"prob_{n}" for n in names]]
    assert preds["id"].tolist() == [f"doc{i}" for i in range(40, 48)]
    for _, row in preds.iterrows():
        chosen = [n for n in names if row[f"prob_{n}"] >= 0.5]
        assert row["labels"] == "|".join(chosen)


def test_regression_trains_and_predicts_through_the_clis(tmp_path):
    train, test = write_csvs(tmp_path, lambda i, r: round(len(r["text"].split()) / 100 + 0.01, 3))
    metrics, config, preds = train_and_predict(tmp_path, train, test)
    assert {"val/mse", "val/mae", "val/pearson", "val/spearman", "val/mse_best", "test/mse"} <= set(metrics)
    assert "val/acc" not in metrics
    assert config["problem_type"] == REGRESSION and config["id2label"] == {"0": "prediction"}
    assert list(preds.columns) == ["id", "prediction"]
    assert len(preds) == 8 and preds["prediction"].dtype.kind == "f"
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("problem_type", [MULTI, REGRESSION])
def test_checkpoint_keeps_problem_type_and_loss_options(tiny_tokenizer, tmp_path, problem_type):
    from bigbird_ft.models.classifier import BigBirdClassifier
    from tests.models.test_module import save_checkpoint

    extra = {"pos_weight": [1.0, 2.0, 3.0], "threshold": 0.3} if problem_type == MULTI else {}
    module = build_tiny(tiny_tokenizer, problem_type=problem_type, model_extra=extra)
    save_checkpoint(module, tmp_path / "m.ckpt")
    restored = BigBirdClassifier.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert restored.problem_type == problem_type and restored.id2label == module.id2label
    if problem_type == MULTI:
        assert restored.threshold == 0.3 and restored.loss_weights.tolist() == [1.0, 2.0, 3.0]
