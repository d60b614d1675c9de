"""The layout the README's architecture section promises, checked on the code itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
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
    assert calls == ["src/bigbird_ft/factory.py"]


def test_the_lightning_module_stays_small():
    tree = ast.parse((SRC / "module.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BigBirdClassifier")
    assert cls.end_lineno - cls.lineno + 1 <= 200


def test_a_checkpoint_of_the_old_layout_still_loads(tiny_tokenizer, tmp_path):
    """Before model.py the module held encoder/head itself: keys without the ``model.`` prefix."""
    from bigbird_ft.models.classifier import BigBirdClassifier

    from .test_module import save_checkpoint
    from .tiny_module import build_tiny

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
