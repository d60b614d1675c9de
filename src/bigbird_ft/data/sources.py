"""The ``data=`` options: generated (synthetic), local files, the datasets hub, Hyperpartisan, PEPs.

Every option returns datasets with cache files on disk (never in-memory ones), so that the
tokenization in ``DocumentDataModule.setup`` is cached by datasets and a second run
with the same data, tokenizer and max_length skips it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import datasets

from ..errors import UserError
from ..io_utils import atomic_dir
from .datamodule import DocumentDataModule, decode_class_labels, stratified_split
from .synthetic import SyntheticSpec, generate
from .synthetic_ner import NerSpec, generate_ner
from .synthetic_qa import QaSpec, generate_qa
from .validation import check_file

FILE_LOADERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class GeneratedDataModule(DocumentDataModule):
    """A generated task cached under ``generated_dir/<prefix>-<spec key>``: a spec dataclass and its
    generator; ``data.spec`` keys are checked against the dataclass's fields."""

    spec_class: ClassVar[type]
    generator: ClassVar[Callable[[Any, Path], dict[str, Path]]]
    option: ClassVar[str]
    prefix: ClassVar[str]

    def __init__(self, generated_dir: str = "data/generated", spec: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        known = {f.name for f in fields(self.spec_class)}
        spec = dict(spec or {})
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UserError(f"unknown data.spec keys {unknown}; known: {sorted(known)}")
        # yaml lists -> the tuples the frozen dataclass holds
        spec = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v for k, v in spec.items()}
        self.spec = self.spec_class(**spec)
        self.generated_dir = Path(generated_dir)

    def describe_source(self, split: str | None = None) -> str:
        return f"data={self.option} ({self.generated_dir}/{self.prefix}-{self.spec.key()})"

    def load_splits(self) -> datasets.DatasetDict:
        paths = type(self).generator(self.spec, self.generated_dir)
        return datasets.load_dataset(
            "json",
            data_files={split: str(path) for split, path in paths.items()},
            cache_dir=str(self.cache_dir / "datasets"),
        )


class SyntheticDataModule(GeneratedDataModule):
    """The offline default: a generated long-range classification task (synthetic.py)."""

    spec_class, generator, option, prefix = SyntheticSpec, staticmethod(generate), "synthetic", "synthetic"


class SyntheticNerDataModule(GeneratedDataModule):
    """A generated long-range tagging task (synthetic_ner.py)."""

    spec_class, generator, option, prefix = NerSpec, staticmethod(generate_ner), "synthetic_ner", "ner"


class SyntheticQaDataModule(GeneratedDataModule):
    """A generated long-range question answering task (synthetic_qa.py)."""

    spec_class, generator, option, prefix = QaSpec, staticmethod(generate_qa), "synthetic_qa", "qa"


class FilesDataModule(DocumentDataModule):
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

    def describe_source(self, split: str | None = None) -> str:
        split = split if split in self.files and self.files[split] else "train"
        return f"data.{split}_file={self.files[split]}"

    def load_splits(self) -> datasets.DatasetDict:
        if not self.files["train"]:
            raise UserError("data=files needs a training file; set data.train_file")
        splits = {}
        for split, name in self.files.items():
            if not name:
                continue
            path = Path(name).expanduser()
            key = f"data.{split}_file"
            if path.is_dir():
                raise UserError(f"{path} is a folder, not a file; set {key} to a csv/json/jsonl/parquet file in it")
            if not path.is_file():
                raise UserError(f"file not found: {path}; fix {key}")
            loader = FILE_LOADERS.get(path.suffix.lower())
            if loader is None:
                raise UserError(
                    f"unknown extension '{path.suffix}' of {path}; use one of {', '.join(FILE_LOADERS)} ({key})"
                )
            if path.stat().st_size == 0:
                raise UserError(f"file is empty: {path}; fix {key}")
            check_file(path, key)
            # csv: only an empty cell is missing; pandas' default would also read a class named "NA",
            # "N/A", "null" or "nan" as a missing label
            options = {"keep_default_na": False, "na_values": [""]} if loader == "csv" else {}
            try:
                splits[split] = datasets.load_dataset(
                    loader, data_files=str(path), split="train", cache_dir=str(self.cache_dir / "datasets"),
                    **options,
                )
            except Exception as err:  # datasets wraps parser errors in several types
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                if "corresponds to no data" in reason:
                    raise UserError(f"{path} has no data rows (a header only?); fix {key}") from None
                raise UserError(f"cannot read {path} ({reason}); fix {key}") from None
        return datasets.DatasetDict(splits)


class HubDataModule(DocumentDataModule):
    """data=hub: ``datasets.load_dataset(name, config_name)``, then the same pipeline as files."""

    def __init__(
        self,
        name: str,
        config_name: str | None = None,
        revision: str | None = None,
        splits: dict[str, str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.config_name = config_name
        self.revision = revision
        # our split -> the hub split; a missing validation split is cut from train (data.val_fraction)
        self.splits = dict(splits or {"train": "train", "validation": "validation", "test": "test"})

    def describe_source(self, split: str | None = None) -> str:
        config = f", data.config_name={self.config_name}" if self.config_name else ""
        return f"data.name={self.name}{config}"

    def load_splits(self) -> datasets.DatasetDict:
        if not self.name:
            raise UserError("data=hub needs a dataset name; set data.name")
        try:
            loaded = datasets.load_dataset(
                self.name, self.config_name, revision=self.revision, cache_dir=str(self.cache_dir / "datasets")
            )
        except Exception as err:  # offline, unknown name, bad config: many exception types, one message
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"cannot load hub dataset data.name={self.name} config_name={self.config_name} ({reason}); "
                "check data.name / data.config_name and the network (HF_DATASETS_OFFLINE)"
            ) from None
        if not isinstance(loaded, datasets.DatasetDict):
            loaded = datasets.DatasetDict({"train": loaded})
        splits = {}
        for ours, theirs in self.splits.items():
            if theirs is None or theirs not in loaded:
                if ours == "train":
                    raise UserError(
                        f"{self.describe_source()} has no split '{theirs}' (splits: {', '.join(loaded)}); "
                        "set data.splits.train"
                    )
                continue
            splits[ours] = decode_class_labels(loaded[theirs], self.label_column)
        return datasets.DatasetDict(splits)


def files_digest(paths: Sequence[Path]) -> str:
    """Content hash of source files: the key of their parsed (cached) form."""
    digest = hashlib.sha1()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


def cached_parse(
    folder: Path, build: Callable[[], dict[str, list[dict[str, Any]]]]
) -> datasets.DatasetDict:
    """Parse once, save with ``save_to_disk``, and always return the on-disk (memory-mapped) copy.

    ``Dataset.from_list`` gives an in-memory dataset without cache files, for which datasets'
    ``map`` never caches: without this, every run would tokenize the corpus again.
    """
    if not (folder / "dataset_dict.json").exists():
        rows = build()
        with atomic_dir(folder) as tmp:
            datasets.DatasetDict({split: datasets.Dataset.from_list(r) for split, r in rows.items()}).save_to_disk(
                str(tmp)
            )
    return datasets.load_from_disk(str(folder))


HYPERPARTISAN_PARSER_VERSION = 1
HYPERPARTISAN_FILES = {
    "train": ("articles-training-byarticle-20181122.xml", "ground-truth-training-byarticle-20181122.xml"),
    "test": ("articles-test-byarticle-20181207.xml", "ground-truth-test-byarticle-20181207.xml"),
}


def read_hyperpartisan(articles: Path, ground_truth: Path) -> list[dict[str, str]]:
    """SemEval-2019 Task 4 by-article XML, as published: title + markup text, joined on ``id``."""
    import xml.etree.ElementTree as ET

    labels = {a.get("id"): a.get("hyperpartisan") for a in ET.parse(ground_truth).getroot().iter("article")}
    rows = []
    for article in ET.parse(articles).getroot().iter("article"):
        article_id = article.get("id")
        if article_id not in labels:
            raise UserError(f"article {article_id} of {articles} has no label in {ground_truth}; fix data.dir")
        body = " ".join("".join(article.itertext()).split())
        rows.append({"id": article_id, "text": f"{article.get('title', '')}\n\n{body}", "label": labels[article_id]})
    return rows


class HyperpartisanDataModule(DocumentDataModule):
    """data=hyperpartisan: the published XML files in ``dir``; validation split from train."""

    def __init__(self, dir: str, **kwargs: Any) -> None:  # noqa: A002  (contract key data.dir)
        super().__init__(**kwargs)
        self.dir = Path(dir)

    def describe_source(self, split: str | None = None) -> str:
        return f"data.dir={self.dir}"

    def load_splits(self) -> datasets.DatasetDict:
        paths = []
        for articles, truth in HYPERPARTISAN_FILES.values():
            for name in (articles, truth):
                if not (self.dir / name).is_file():
                    raise UserError(f"{self.dir / name} not found; set data.dir to the Hyperpartisan folder")
                paths.append(self.dir / name)

        def parse() -> dict[str, list[dict[str, Any]]]:
            return {
                split: read_hyperpartisan(self.dir / articles, self.dir / truth)
                for split, (articles, truth) in HYPERPARTISAN_FILES.items()
            }

        # the parser version is part of the key: a change to read_hyperpartisan re-parses
        key = f"hyperpartisan-v{HYPERPARTISAN_PARSER_VERSION}-{files_digest(paths)}"
        return cached_parse(self.cache_dir / "parsed" / key, parse)


class PepsDataModule(DocumentDataModule):
    """data=peps: ``peps.jsonl`` in ``dir``; seeded stratified test and validation splits."""

    def __init__(self, dir: str, test_fraction: float = 0.2, **kwargs: Any) -> None:  # noqa: A002
        super().__init__(**kwargs)
        self.dir = Path(dir)
        self.test_fraction = float(test_fraction)

    def describe_source(self, split: str | None = None) -> str:
        return f"data.dir={self.dir}"

    def load_splits(self) -> datasets.DatasetDict:
        path = self.dir / "peps.jsonl"
        if not path.is_file():
            raise UserError(f"{path} not found; set data.dir to the folder holding peps.jsonl")
        full = datasets.load_dataset("json", data_files=str(path), split="train",
                                     cache_dir=str(self.cache_dir / "datasets"))
        if self.label_column not in full.column_names:
            raise UserError(
                f"column '{self.label_column}' not in {path} (columns: {', '.join(full.column_names)}); "
                "set data.label_column"
            )
        full = full.filter(lambda row: row[self.label_column] not in (None, ""))
        # a fixed seed, independent of ${seed}: the test split must not move with the training seed
        return stratified_split(full, self.label_column, self.test_fraction, seed=1234)
