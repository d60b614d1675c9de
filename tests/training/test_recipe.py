"""The training recipe: parameter groups, layer-wise LR decay, head LR, freezing, checkpointing, precision."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import get_linear_schedule_with_warmup

from bigbird_ft.errors import UserError
from tests.conftest import ROOT, run_script, tiny_overrides
from tests.tasks.test_problem_types import InMemory, texts
from tests.tiny_module import MULTI, REGRESSION, build_tiny


def lr_by_group(groups) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in groups}


def groups_of(module) -> list[dict]:
    """The AdamW groups configure_optimizers builds for this module."""
    from bigbird_ft.training.optim import parameter_groups

    return parameter_groups(module.model, module.hparams.optim, module.encoder.config.num_hidden_layers)


@pytest.mark.parametrize("head", ["cls", "pooler"])
def test_layerwise_lr_decay_and_head_lr_groups(tiny_tokenizer, head):
    lr, decay, layers = 1e-3, 0.5, 3
    module = build_tiny(tiny_tokenizer, head=head, num_layers=layers,
                        optim={"lr": lr, "layerwise_lr_decay": decay, "head_lr": 1e-2, "weight_decay": 0.01})
    groups = groups_of(module)
    lrs = lr_by_group(groups)
    expected = {"embeddings": lr * decay ** (layers + 1), "head": 1e-2}
    expected.update({f"layer_{i}": lr * decay ** (layers - i) for i in range(layers)})
    if head == "pooler":
        expected["pooler"] = lr
    for name, value in expected.items():
        assert lrs[name] == pytest.approx(value), name
        assert lrs[f"{name}/no_decay"] == pytest.approx(value), name  # biases / LayerNorm follow their layer
    assert set(lrs) == set(expected) | {f"{n}/no_decay" for n in expected}
    for group in groups:
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else 0.01)
    # every trainable parameter sits in exactly one group
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters() if p.requires_grad)
    layer1 = next(g for g in groups if g["name"] == "layer_1")
    assert any(p is module.encoder.encoder.layer[1].attention.self.query.weight for p in layer1["params"])


def test_warmup_schedule_keeps_the_per_group_ratios(tiny_tokenizer):
    module = build_tiny(tiny_tokenizer, optim={"lr": 1e-3, "layerwise_lr_decay": 0.8})
    optimizer = torch.optim.AdamW(groups_of(module))
    scheduler = get_linear_schedule_with_warmup(optimizer, 4, 10)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    lrs = lr_by_group(optimizer.param_groups)
    assert lrs["layer_0"] / lrs["layer_1"] == pytest.approx(0.8)
    assert lrs["embeddings"] / lrs["layer_1"] == pytest.approx(0.8**2)
    assert lrs["head"] == pytest.approx(1e-3 * 2 / 4)


def test_without_decay_every_group_has_the_base_lr(tiny_tokenizer):
    module = build_tiny(tiny_tokenizer, optim={"lr": 3e-4})
    assert set(lr_by_group(groups_of(module)).values()) == {3e-4}


def tiny_loader(module, n_batches: int = 2):
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(n_batches):
        ids = torch.randint(5, len(module.tokenizer), (4, 32), generator=g)
        data.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])})
    return torch.utils.data.DataLoader(data, batch_size=None)


def test_freeze_encoder_for_the_first_epochs(tiny_tokenizer):
    module = build_tiny(tiny_tokenizer, optim={"lr": 1e-2, "scheduler": "constant", "freeze_encoder_epochs": 1})
    snapshots = []

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append((copy.deepcopy(pl_module.encoder.state_dict()), copy.deepcopy(pl_module.head.state_dict())))

    start = (copy.deepcopy(module.encoder.state_dict()), copy.deepcopy(module.head.state_dict()))
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Snapshot()],
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=tiny_loader(module))

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    (enc0, head0), (enc1, head1) = snapshots
    assert same(enc0, start[0]) and not same(head0, start[1])  # epoch 0: head only
    assert not same(enc1, enc0) and not same(head1, head0)  # epoch 1: everything
    assert all(p.requires_grad for p in module.encoder.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(tiny_tokenizer):
    torch.manual_seed(0)
    ids = torch.randint(5, len(tiny_tokenizer), (2, 192))  # long enough for block-sparse attention
    mask = torch.ones_like(ids)
    labels = torch.tensor([0, 2])
    grads, reference = [], None
    for checkpointing in (False, True):
        module = build_tiny(tiny_tokenizer, attention="hf_block_sparse",
                            model_extra={"gradient_checkpointing": checkpointing})
        if reference is None:
            reference = copy.deepcopy(module.state_dict())
        else:
            module.load_state_dict(reference)
        module.train()
        module.loss(module(ids, mask), labels).backward()
        grads.append(module.encoder.embeddings.word_embeddings.weight.grad.clone())
    assert module.encoder.is_gradient_checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def compose_train(tmp_path, *overrides: str):
    extra = [o for o in tiny_overrides(tmp_path) if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train",
                       overrides=["debug=fdr", f"paths.output_dir={tmp_path / 'out'}", *extra, *overrides])


def test_mixed_precision_with_hf_block_sparse_on_cpu_fails_early(tmp_path):
    from bigbird_ft.runs.train import train

    cfg = compose_train(tmp_path, "trainer.precision=bf16-mixed", "attention=hf_block_sparse")
    with pytest.raises(UserError, match="set trainer.precision=32-true or attention=hf_full"):
        train(cfg)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_bf16_mixed_runs_one_step_with_full_attention_on_cpu(tmp_path):
    from bigbird_ft.runs.train import train

    value = train(compose_train(tmp_path, "trainer.precision=bf16-mixed", "attention=hf_full"))
    assert 0.0 <= value <= 1.0


def test_class_weights_and_pos_weight_auto(tmp_path):
    def resolve_loss_weights(model_cfg, datamodule):
        return datamodule.task.resolve_weights(model_cfg, datamodule.train_labels, datamodule.label2id)

    single = InMemory({"train": {"text": texts(8), "label": ["a", "a", "a", "b"] * 2},
                       "validation": {"text": texts(2), "label": ["a", "b"]}})
    single.prepare_raw()
    weights = resolve_loss_weights({"class_weights": "auto"}, single)["class_weights"]
    assert weights == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])
    multi = InMemory({"train": {"text": texts(4), "label": ["x|y", "x", "x", "x|z"]},
                      "validation": {"text": texts(1), "label": ["x"]}}, label_separator="|")
    multi.prepare_raw()
    assert multi.problem_type == MULTI
    pos = resolve_loss_weights({"pos_weight": "auto"}, multi)["pos_weight"]
    assert pos == pytest.approx([0 / 4, 3 / 1, 3 / 1])
    with pytest.raises(UserError, match="class_weights applies to single_label_classification and token_classification only"):
        resolve_loss_weights({"class_weights": "auto"}, multi)


def test_regression_moves_the_default_monitor_to_mse():
    from bigbird_ft.runs.train import adapt_monitor_to_task
    from bigbird_ft.tasks import task_for

    cfg = OmegaConf.create({"monitor": "val/acc", "monitor_mode": "max", "optimized_metric": "val/acc_best"})
    OmegaConf.set_struct(cfg, True)
    adapt_monitor_to_task(cfg, task_for(REGRESSION))
    assert (cfg.monitor, cfg.monitor_mode, cfg.optimized_metric) == ("val/mse", "min", "val/mse_best")
    chosen = OmegaConf.create({"monitor": "val/pearson", "monitor_mode": "max", "optimized_metric": "val/pearson_best"})
    adapt_monitor_to_task(chosen, task_for(REGRESSION))
    assert chosen.monitor == "val/pearson"  # a monitor the user set is left alone


@pytest.mark.slow
def test_multirun_every_head_debug_fdr(tmp_path):
    result = run_script("train.py", [
        "-m", "head=cls,mean,max,pooler,attention", "debug=fdr",
        *[o for o in tiny_overrides(tmp_path) if not o.startswith("hydra.run")],
    ], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "multirun").glob("*/metrics.json"))
    heads = {dict(o.split("=", 1) for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()))["head"]
             for j in jobs}
    assert heads == {"cls", "mean", "max", "pooler", "attention"}
    for job in jobs:  # single-label runs draw their confusion matrices into the run dir
        assert (job / "confusion_matrix_val.png").exists() and (job / "confusion_matrix_test.png").exists()


class _FakeTrainer:
    def __init__(self, precision: str, gradient_clip_val: float | None) -> None:
        self.precision, self.gradient_clip_val = precision, gradient_clip_val


@pytest.mark.parametrize(
    ("fused", "precision", "clip", "expected"),
    [
        (None, None, None, True),  # float CPU parameters, no trainer: fused
        (None, "32-true", 1.0, True),
        (None, "bf16-mixed", 1.0, False),  # Lightning cannot clip before a fused step unscales
        (None, "bf16-mixed", None, True),
        (False, "32-true", 1.0, False),
    ],
)
def test_adamw_is_fused_unless_mixed_precision_clips(tiny_tokenizer, fused, precision, clip, expected):
    module = build_tiny(tiny_tokenizer, optim={"lr": 1e-3, "fused": fused})
    if precision is not None:
        module._trainer = _FakeTrainer(precision, clip)
    assert module.build_optimizer().defaults["fused"] is expected


def test_explicit_fused_with_mixed_precision_clipping_is_a_config_error(tiny_tokenizer):
    module = build_tiny(tiny_tokenizer, optim={"lr": 1e-3, "fused": True})
    module._trainer = _FakeTrainer("bf16-mixed", 1.0)
    with pytest.raises(UserError, match="optim.fused=null or trainer.gradient_clip_val=null"):
        module.build_optimizer()
