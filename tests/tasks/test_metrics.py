"""Logged metric names per problem type, best-so-far trackers and the confusion-matrix images."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from tests.conftest import require_module
from tests.tiny_module import MULTI, REGRESSION, SINGLE, build_tiny


class ImageLogger(Logger):
    """Records what a W&B-like (log_image) or TensorBoard-like (experiment.add_figure) logger gets."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.style = style
        if style == "tensorboard":
            self._experiment = SimpleNamespace(add_figure=lambda tag, fig, global_step: self.images.append(tag))
        else:
            self.log_image = lambda key, images, step: self.images.append(key)

    @property
    def experiment(self):
        return getattr(self, "_experiment", None)

    name = "fake"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def batches(problem_type: str, num_labels: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        ids = torch.randint(5, vocab, (6, 32), generator=g)
        if problem_type == SINGLE:
            labels = torch.arange(6) % num_labels
        elif problem_type == MULTI:
            labels = torch.randint(0, 2, (6, num_labels), generator=g).float()
        else:
            labels = torch.randn(6, generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def run_stage(module, stage: str, tmp_path, loggers=()) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", logger=list(loggers) or False, default_root_dir=tmp_path,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data = batches(module.problem_type, module.num_labels, len(module.tokenizer))
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    result = (trainer.validate if stage == "val" else trainer.test)(module, dataloaders=loader, verbose=False)
    return {k: float(v) for k, v in result[0].items()}


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "expected", "absent"),
    [
        (SINGLE, 3, {"val/acc", "val/f1", "val/f1_l0", "val/f1_l1", "val/f1_l2", "val/acc_best", "val/f1_best"},
         {"val/auroc"}),
        (SINGLE, 2, {"val/acc", "val/f1", "val/auroc", "val/auroc_best", "val/f1_l0", "val/f1_l1"}, set()),
        (MULTI, 3, {"val/acc", "val/f1", "val/f1_micro", "val/f1_macro", "val/subset_acc", "val/acc_best",
                    "val/f1_best", "val/f1_micro_best"}, {"val/f1_l0"}),
        (REGRESSION, 1, {"val/mse", "val/mae", "val/pearson", "val/spearman", "val/mse_best", "val/mae_best",
                         "val/pearson_best", "val/spearman_best"}, {"val/acc", "val/f1"}),
    ],
)
def test_validation_logs_the_metrics_of_its_problem_type(tiny_tokenizer, tmp_path, problem_type, num_labels,
                                                         expected, absent):
    module = build_tiny(tiny_tokenizer, problem_type=problem_type, num_labels=num_labels)
    metrics = run_stage(module, "val", tmp_path)
    assert expected <= set(metrics), sorted(metrics)
    assert not absent & set(metrics)
    if problem_type == MULTI:
        assert metrics["val/acc"] == metrics["val/subset_acc"] and metrics["val/f1"] == metrics["val/f1_macro"]


def test_best_so_far_follows_the_metric_direction(tiny_tokenizer):
    module = build_tiny(tiny_tokenizer, problem_type=REGRESSION)
    mse, pearson = module.best_metrics["mse"], module.best_metrics["pearson"]
    for value in (0.5, 0.2, 0.9):
        mse.update(torch.tensor(value))
        pearson.update(torch.tensor(value))
    assert float(mse.compute()) == pytest.approx(0.2) and float(pearson.compute()) == pytest.approx(0.9)


@pytest.mark.parametrize("style", ["wandb", "tensorboard"])
def test_confusion_matrix_png_and_logged_image(tiny_tokenizer, tmp_path, style):
    module = build_tiny(tiny_tokenizer, num_labels=3)
    logger = ImageLogger(style)
    run_stage(module, "val", tmp_path, [logger])
    run_stage(module, "test", tmp_path, [logger])
    for stage in ("val", "test"):
        png = tmp_path / f"confusion_matrix_{stage}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert logger.images == ["val/confusion_matrix", "test/confusion_matrix"]
    assert not list(tmp_path.glob(".confusion_matrix*"))  # atomic write left no temporary file


def test_no_confusion_matrix_for_multi_label_or_regression(tiny_tokenizer, tmp_path):
    for problem_type in (MULTI, REGRESSION):
        run_stage(build_tiny(tiny_tokenizer, problem_type=problem_type), "val", tmp_path)
    assert not list(tmp_path.glob("confusion_matrix_*.png"))


def test_metric_values_match_sklearn_and_scipy():
    """Every task's metrics on fixed predictions against an independent implementation."""
    sklearn_metrics = require_module("sklearn.metrics", "scikit-learn comes with the bench extra")
    from scipy import stats

    from bigbird_ft.tasks import task_for

    g = torch.Generator().manual_seed(0)
    # single-label, 3 classes, unbalanced so macro and micro F1 differ
    probs = torch.softmax(torch.randn(40, 3, generator=g), -1)
    labels = torch.tensor([0] * 25 + [1] * 10 + [2] * 5)
    values = task_for(SINGLE).metrics(3, 0.5)(probs, labels)
    preds = probs.argmax(-1).numpy()
    assert float(values["acc"]) == pytest.approx(sklearn_metrics.accuracy_score(labels, preds))
    assert float(values["f1"]) == pytest.approx(sklearn_metrics.f1_score(labels, preds, average="macro"))
    assert values["f1_per_class"].tolist() == pytest.approx(list(sklearn_metrics.f1_score(labels, preds, average=None)))
    binary = torch.softmax(torch.randn(30, 2, generator=g), -1)
    targets = torch.randint(0, 2, (30,), generator=g)
    auroc = task_for(SINGLE).metrics(2, 0.5)(binary, targets)["auroc"]
    assert float(auroc) == pytest.approx(sklearn_metrics.roc_auc_score(targets, binary[:, 1]), abs=1e-6)
    # multi-label at threshold 0.3
    multi_probs = torch.rand(30, 4, generator=g)
    multi_labels = (torch.rand(30, 4, generator=g) > 0.6).long()
    values = task_for(MULTI).metrics(4, 0.3)(multi_probs, multi_labels)
    chosen = (multi_probs >= 0.3).long().numpy()
    assert float(values["subset_acc"]) == pytest.approx(sklearn_metrics.accuracy_score(multi_labels, chosen))
    assert float(values["f1_micro"]) == pytest.approx(sklearn_metrics.f1_score(multi_labels, chosen, average="micro"))
    assert float(values["f1_macro"]) == pytest.approx(sklearn_metrics.f1_score(multi_labels, chosen, average="macro"))
    # regression
    predicted, target = torch.randn(50, generator=g), torch.randn(50, generator=g)
    values = task_for(REGRESSION).metrics(1, 0.5)(predicted, target)
    assert float(values["mse"]) == pytest.approx(sklearn_metrics.mean_squared_error(target, predicted), rel=1e-5)
    assert float(values["mae"]) == pytest.approx(sklearn_metrics.mean_absolute_error(target, predicted), rel=1e-5)
    assert float(values["pearson"]) == pytest.approx(stats.pearsonr(predicted, target)[0], abs=1e-5)
    assert float(values["spearman"]) == pytest.approx(stats.spearmanr(predicted, target)[0], abs=1e-5)
