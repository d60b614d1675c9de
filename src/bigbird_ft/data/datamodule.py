"""LightningDataModule: raw splits -> label mapping -> tokenizer -> cached token ids -> batches."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ..errors import UserError
from .collate import BlockPaddingCollator
from .sampler import LengthBucketBatchSampler, rank_sampler

datasets.disable_progress_bars()


def join_text_columns(example: dict[str, Any], columns: Sequence[str], separator: str) -> str:
    parts = [example[c] for c in columns]
    return separator.join("" if p is None else str(p) for p in parts)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable identity for the token cache (hashing the tokenizer object is not stable)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def sort_labels(values: set[Any]) -> list[str]:
    """Integer-like labels sort numerically ("2" before "10"), others as strings."""
    as_text = {str(v) for v in values}
    try:
        return [str(v) for v in sorted(as_text, key=lambda v: float(v))]
    except ValueError:
        return sorted(as_text)


class TextClassificationDataModule(L.LightningDataModule):
    """Shared pipeline; each ``data=`` option only says how to load its raw splits."""

    def __init__(
        self,
        max_length: int = 4096,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        pad_to_multiple_of: int = 64,
        bucket_by_length: bool = True,
        val_fraction: float = 0.1,
        seed: int = 42,
        text_column: str | Sequence[str] = "text",
        label_column: str = "label",
        text_separator: str = "\n\n",
        cache_dir: str = "data/cache",
    ) -> None:
        super().__init__()
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.num_proc = num_proc
        self.pad_to_multiple_of = int(pad_to_multiple_of)
        self.bucket_by_length = bool(bucket_by_length)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
        self.label_column = label_column
        self.text_separator = text_separator
        self.cache_dir = Path(cache_dir)
        self.raw: datasets.DatasetDict | None = None
        self.tokenized: datasets.DatasetDict | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.label_names: list[str] = []

    # ------------------------------------------------------------- raw data
    def load_splits(self) -> datasets.DatasetDict:
        """Return the raw splits (``train`` required; ``validation``/``test`` optional)."""
        raise NotImplementedError

    def describe_source(self) -> str:
        return type(self).__name__

    def prepare_raw(self) -> None:
        if self.raw is not None:
            return
        raw = self.load_splits()
        if "train" not in raw:
            raise UserError(f"{self.describe_source()} has no train split; set data.train_file")
        for split, ds in raw.items():
            missing = [c for c in [*self.text_columns, self.label_column] if c not in ds.column_names]
            if missing:
                key = "data.text_column" if missing[0] in self.text_columns else "data.label_column"
                raise UserError(
                    f"column '{missing[0]}' not in the {split} split of {self.describe_source()} "
                    f"(columns: {', '.join(ds.column_names)}); set {key}"
                )
        columns, separator, label_column = self.text_columns, self.text_separator, self.label_column

        def normalise(example: dict[str, Any]) -> dict[str, Any]:
            return {"text": join_text_columns(example, columns, separator), "label": str(example[label_column])}

        raw = datasets.DatasetDict(
            {
                split: ds.map(normalise, remove_columns=[c for c in ds.column_names if c in ("text", "label")])
                for split, ds in raw.items()
            }
        )
        for split, ds in raw.items():
            if len(ds) == 0:
                raise UserError(f"the {split} split of {self.describe_source()} is empty")
        self.label_names = sort_labels(set(raw["train"]["label"]))
        if len(self.label_names) < 2:
            raise UserError(
                f"the training labels hold one class only ({self.label_names[0]}); check data.label_column"
            )
        for split in ("validation", "test"):
            if split in raw:
                unseen = sorted(set(raw[split]["label"]) - set(self.label_names))
                if unseen:
                    raise UserError(
                        f"labels {unseen} appear in the {split} split but not in train "
                        f"(train labels: {self.label_names}); fix {self.describe_source()}"
                    )
        if "validation" not in raw:
            raw["train"], raw["validation"] = self._stratified_split(raw["train"])
        self.raw = raw

    def _stratified_split(self, train: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Seeded validation split of train that keeps the class proportions."""
        encoded = train.class_encode_column("label")
        names = encoded.features["label"].names
        parts = encoded.train_test_split(test_size=self.val_fraction, seed=self.seed, stratify_by_column="label")

        def decode(batch: dict[str, list]) -> dict[str, list]:
            return {"label": [names[i] for i in batch["label"]]}

        return tuple(  # type: ignore[return-value]
            parts[name].cast_column("label", datasets.Value("int64")).map(decode, batched=True)
            for name in ("train", "test")
        )

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    def train_texts(self) -> list[str]:
        self.prepare_raw()
        return list(self.raw["train"]["text"])

    # ------------------------------------------------------------ tokenized
    def attach_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokenized = None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenized is not None:
            return
        if self.tokenizer is None:
            raise RuntimeError("attach_tokenizer() must be called before setup()")
        self.prepare_raw()
        tokenizer, max_length, label2id = self.tokenizer, self.max_length, self.label2id
        tok_key = tokenizer_fingerprint(tokenizer)

        def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            return {
                "input_ids": enc["input_ids"],
                "labels": [label2id[label] for label in batch["label"]],
                "row": indices,
                "length": [len(ids) for ids in enc["input_ids"]],
            }

        tokenized = {}
        for split, ds in self.raw.items():
            fingerprint = hashlib.sha1(
                f"{ds._fingerprint}|{tok_key}|{max_length}|{sorted(label2id.items())}".encode()
            ).hexdigest()[:16]
            tokenized[split] = ds.map(
                encode,
                batched=True,
                with_indices=True,
                remove_columns=ds.column_names,
                num_proc=self.num_proc,
                new_fingerprint=fingerprint,
                desc=f"tokenizing {split}",
            )
        self.tokenized = datasets.DatasetDict(tokenized)

    # ----------------------------------------------------------- dataloaders
    def collator(self) -> BlockPaddingCollator:
        return BlockPaddingCollator(self.tokenizer, self.pad_to_multiple_of)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.tokenized[split]
        common = {"collate_fn": self.collator(), "num_workers": self.num_workers}
        if shuffle and self.bucket_by_length:
            sampler = LengthBucketBatchSampler(ds["length"], self.batch_size, seed=self.seed)
            return DataLoader(ds, batch_sampler=sampler, **common)
        # under DDP each rank reads its own share (train() disables Lightning's sampler injection)
        sampler = rank_sampler(ds, shuffle=shuffle, seed=self.seed)
        return DataLoader(ds, batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle and sampler is None, sampler=sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.tokenized:
            raise UserError(f"{self.describe_source()} has no test split; set test=false or data.test_file")
        return self._loader("test", shuffle=False)

    def has_test_split(self) -> bool:
        self.prepare_raw()
        return "test" in self.raw
