"""The layout the README's architecture section promises, checked on the code itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bigbird_ft"
PROBLEM_TYPE_NAMES = re.compile(r"\"(single_label_classification|multi_label_classification|regression|"
                                r"token_classification)\"|"
                                r"problem_type\s*(==|!=|in)\s")


def python_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.py")]


def test_only_the_tasks_package_branches_on_the_problem_type():
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in python_files(SRC) if "tasks" not in p.parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if PROBLEM_TYPE_NAMES.search(line)]
    assert offenders == []


def test_the_classifier_is_constructed_by_the_factory_only():
    calls = []
    for path in python_files(SRC, ROOT / "bench", ROOT / "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "BigBirdClassifier":
                calls.append(str(path.relative_to(ROOT)))
    assert calls == ["src/bigbird_ft/models/factory.py"]


def test_the_lightning_module_stays_small():
    assert len((SRC / "models" / "classifier.py").read_text().splitlines()) <= 200


def test_the_package_is_grouped_by_stage():
    """At most 10 modules at the top of the package; the rest in one folder per stage."""
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 10, top
    assert {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= {
        "attention", "data", "heads", "inference", "inputs", "models", "runs", "tasks", "training"}


STAGES = ["inputs", "tasks|attention|heads", "data|training", "models", "inference", "runs"]


def test_no_stage_imports_a_later_one():
    """The floors of docs/design.md: a stage imports only stages listed before it (no cycle, no import
    back up), e.g. the LightningModule (models) uses training's recipe, never the runs that train it."""
    rank = {name: i for i, group in enumerate(STAGES) for name in group.split("|")}
    offenders = []
    for stage, level in rank.items():
        for path in (SRC / stage).rglob("*.py"):
            for match in re.finditer(r"from \.\.(\w+)|bigbird_ft\.(\w+)", path.read_text()):
                target = match.group(1) or match.group(2)
                if target in rank and rank[target] > level:
                    offenders.append(f"{path.relative_to(SRC)} -> {target}")
    assert offenders == []


def test_one_trainer_predicts():
    """predict.py, tagging and (later) a server share one prediction loop: one Trainer built for predict."""
    sites = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in python_files(SRC)
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "Trainer"]
    assert sites == [s for s in sites if "inference/" in s or "training/" in s]
    assert len([s for s in sites if "inference/" in s]) == 1, sites


def test_configs_reach_objects_one_way():
    """A config dict with ``name`` goes to a registry as it is: nobody filters the key out by hand."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in python_files(SRC)
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"""!=\s*["']name["']""", line)]
    assert offenders == []


def test_a_checkpoint_of_the_old_layout_still_loads(tiny_tokenizer, tmp_path):
    """Before model.py the module held encoder/head itself: keys without the ``model.`` prefix."""
    from bigbird_ft.models.classifier import BigBirdClassifier
    from tests.models.test_module import save_checkpoint
    from tests.tiny_module import build_tiny

    module = build_tiny(tiny_tokenizer)
    save_checkpoint(module, tmp_path / "new.ckpt")
    checkpoint = torch.load(tmp_path / "new.ckpt", map_location="cpu", weights_only=False)
    # the old layout had no calibration temperature either: it loads as T = 1
    checkpoint["state_dict"] = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()
                                if k != "model.temperature"}
    assert any(k.startswith("encoder.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "old.ckpt")
    restored = BigBirdClassifier.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    for key, value in module.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert float(restored.model.temperature) == 1.0
