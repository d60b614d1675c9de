"""The ``data=`` options that read text: generated (synthetic) and local files."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import datasets

from ..errors import UserError
from .datamodule import TextClassificationDataModule
from .synthetic import SyntheticSpec, generate

FILE_LOADERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class SyntheticDataModule(TextClassificationDataModule):
    """The offline default: a generated long-range task cached under ``generated_dir``."""

    def __init__(self, generated_dir: str = "data/generated", spec: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        known = {f.name for f in fields(SyntheticSpec)}
        spec = dict(spec or {})
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UserError(f"unknown data.spec keys {unknown}; known: {sorted(known)}")
        if "labels" in spec:
            spec["labels"] = tuple(spec["labels"])
        if "sentence_words" in spec:
            spec["sentence_words"] = tuple(spec["sentence_words"])
        self.spec = SyntheticSpec(**spec)
        self.generated_dir = Path(generated_dir)

    def describe_source(self) -> str:
        return f"data=synthetic ({self.generated_dir}/synthetic-{self.spec.key()})"

    def load_splits(self) -> datasets.DatasetDict:
        paths = generate(self.spec, self.generated_dir)
        return datasets.load_dataset(
            "json",
            data_files={split: str(path) for split, path in paths.items()},
            cache_dir=str(self.cache_dir / "datasets"),
        )


class FilesDataModule(TextClassificationDataModule):
    """Local csv / json / jsonl / parquet files, read by datasets' own loaders."""

    def __init__(
        self,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}

    def describe_source(self) -> str:
        return f"data.train_file={self.files['train']}"

    def load_splits(self) -> datasets.DatasetDict:
        if not self.files["train"]:
            raise UserError("data=files needs a training file; set data.train_file")
        splits = {}
        for split, name in self.files.items():
            if not name:
                continue
            path = Path(name).expanduser()
            key = f"data.{split}_file"
            if not path.is_file():
                raise UserError(f"file not found: {path}; fix {key}")
            loader = FILE_LOADERS.get(path.suffix.lower())
            if loader is None:
                raise UserError(
                    f"unknown extension '{path.suffix}' of {path}; use one of {', '.join(FILE_LOADERS)} ({key})"
                )
            if path.stat().st_size == 0:
                raise UserError(f"file is empty: {path}; fix {key}")
            try:
                splits[split] = datasets.load_dataset(
                    loader, data_files=str(path), split="train", cache_dir=str(self.cache_dir / "datasets")
                )
            except Exception as err:  # datasets wraps parser errors in several types
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise UserError(f"cannot read {path} ({reason}); fix {key}") from None
        return datasets.DatasetDict(splits)
