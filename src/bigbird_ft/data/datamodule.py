"""LightningDataModule: raw splits -> label mapping -> tokenizer -> cached token ids -> batches."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from ..errors import UserError
from ..inputs.collate import BlockPaddingCollator
from ..inputs.documents import warn_unknown_tokens
from ..inputs.spec import InputSpec, Reader
from ..tasks import Task, infer_task, task_for
from ..tasks.base import document_columns
from .sampler import LengthBucketBatchSampler, ResumableLoader, rank_sampler

datasets.disable_progress_bars()
log = logging.getLogger(__name__)
#: part of the token cache key: bump it when the features a task's encoder writes change
FEATURES_VERSION = 3


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable identity for the token cache (hashing the tokenizer object is not stable)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        blob = repr(sorted(tokenizer.get_vocab().items()))
    else:
        # calling the tokenizer with truncation/padding stores them in the backend: not its identity
        state = json.loads(backend.to_str())
        blob = json.dumps({k: v for k, v in state.items() if k not in ("truncation", "padding")}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def decode_class_labels(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """Integer ClassLabel columns (as hub datasets and class_encode_column store them) become their
    names; so do lists of them (a hub NER dataset's ``ner_tags``)."""
    feature = ds.features.get(column)
    inner = getattr(feature, "feature", None)
    if isinstance(feature, datasets.List | datasets.Sequence) and isinstance(inner, datasets.ClassLabel):
        names = inner.names

        def decode_lists(batch: dict[str, list]) -> dict[str, list]:
            return {column: [[names[i] for i in row] if row is not None else None for row in batch[column]]}

        return ds.cast_column(column, datasets.List(datasets.Value("int64"))).map(
            decode_lists, batched=True, features=datasets.Features({**ds.features, column: datasets.List(
                datasets.Value("string"))}))
    if not isinstance(feature, datasets.ClassLabel):
        return ds
    names = feature.names

    def decode(batch: dict[str, list]) -> dict[str, list]:
        return {column: [names[i] if i is not None and i >= 0 else None for i in batch[column]]}

    # the output type is given: map would otherwise keep int64 and cast names like "0", "1" back to ints
    return ds.cast_column(column, datasets.Value("int64")).map(
        decode, batched=True, features=datasets.Features({**ds.features, column: datasets.Value("string")}))


def split_keys(ds: datasets.Dataset) -> list[set[str]]:
    """What identifies each document across splits: its text, whitespace collapsed, and its ``id`` if any."""
    texts = [" ".join(str(t).split()) for t in ds["text"]]
    ids = [str(i) for i in ds["id"]] if "id" in ds.column_names else [None] * len(texts)
    return [{f"text:{t}", *([f"id:{i}"] if i not in (None, "", "None") else [])} for t, i in zip(texts, ids, strict=True)]


def shown_columns(columns: Sequence[str], most: int = 12) -> str:
    """Column names for a message: the first few, each cut short (a header-less file has data for names)."""
    names = [str(c) if len(str(c)) <= 30 else f"{str(c)[:27]}..." for c in columns[:most]]
    more = f" and {len(columns) - most} more" if len(columns) > most else ""
    return ", ".join(names) + more


def column_hint(columns: Sequence[str]) -> str | None:
    """When the column names themselves show the file was read wrong, the fix is the file, not a key."""
    if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
        return "the file looks separated by ';', tabs or '|', not commas: save it as a comma-separated .csv"
    if columns and all(str(c).strip().lstrip("-").isdigit() for c in columns):
        return ("the column names are numbers: a .json file must hold a list of records (or use .jsonl), and a "
                ".csv needs a header row")
    if any(len(str(c)) > 60 or len(str(c).split()) > 6 for c in columns):
        return "the first row looks like data, not column names: add a header row to the file"
    return None


def stratified_split(ds: datasets.Dataset, column: str, test_size: float, seed: int) -> datasets.DatasetDict:
    """A seeded split keeping the class proportions of ``column``; labels stay names."""
    parts = ds.class_encode_column(column).train_test_split(
        test_size=test_size, seed=seed, stratify_by_column=column
    )
    return datasets.DatasetDict({name: decode_class_labels(part, column) for name, part in parts.items()})


class DocumentDataModule(L.LightningDataModule):
    """Documents with labels (one per document, or one per word) for every ``data=`` option: each option
    only says how to load its raw splits; the task says how rows become labels and features."""

    def __init__(
        self,
        max_length: int = 4096,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        pad_to_multiple_of: int | None = None,
        bucket_by_length: bool = True,
        val_fraction: float = 0.1,
        seed: int = 42,
        text_column: str | Sequence[str] = "text",
        label_column: str = "label",
        text_separator: str = "\n\n",
        cache_dir: str = "data/cache",
        label_separator: str | None = None,
        problem_type: str | None = None,
        drop_empty: bool = False,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        chunk_stride: int = 128,
        drop_test_duplicates: bool = False,
        question_column: str = "question",
        context_column: str = "context",
        answers_column: str = "answers",
        max_answer_length: int = 30,
        null_answers: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size or batch_size),
                           ("max_length", max_length)):
            if int(value) < 1:
                raise UserError(f"data.{key}={value} must be at least 1; fix data.{key}")
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.num_proc = num_proc
        #: null = the model's block size, handed over in connect()
        self.pad_to_multiple_of = int(pad_to_multiple_of) if pad_to_multiple_of else None
        #: how documents become model inputs: built by connect() from these keys and the model
        self.inputs: InputSpec | None = None
        self.bucket_by_length = bool(bucket_by_length)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
        self.label_column = label_column
        self.text_separator = text_separator
        self.cache_dir = Path(cache_dir)
        self.drop_empty = bool(drop_empty)  # empty texts: an error, or dropped with a count when true
        # token classification: the word and tag lists, and the overlap of windows over a long document
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.chunk_stride = int(chunk_stride)
        # question answering: SQuAD's three columns, the longest answer (tokens), unanswerable questions
        self.question_column, self.context_column, self.answers_column = question_column, context_column, answers_column
        self.max_answer_length = int(max_answer_length)
        self.null_answers = bool(null_answers)
        #: test documents whose text or id also occurs in train / validation: dropped from those (true) or warned of
        self.drop_test_duplicates = bool(drop_test_duplicates)
        #: after prepare_raw: how many test documents still occur in train or validation
        self.test_overlap = 0
        self.raw: datasets.DatasetDict | None = None
        self.tokenized: datasets.DatasetDict | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.label_names: list[str] = []
        self.label_separator = label_separator or None
        #: the problem type (None = inferred from the training labels in prepare_raw)
        self.task: Task | None = task_for(problem_type) if problem_type is not None else None

    # ------------------------------------------------------------- raw data
    def load_splits(self) -> datasets.DatasetDict:
        """Return the raw splits (``train`` required; ``validation``/``test`` optional)."""
        raise NotImplementedError

    def describe_source(self, split: str | None = None) -> str:
        """Where the data comes from, as the key (and file) a user would fix; ``split``: that split's."""
        return type(self).__name__

    def prepare_raw(self) -> None:
        if self.raw is not None:
            return
        raw = self.load_splits()
        if "train" not in raw:
            raise UserError(f"{self.describe_source()} has no train split; set data.train_file")
        if self.task is None and self.is_squad(raw["train"].column_names):
            self.task = task_for("question_answering")
            rank_zero_info("model.problem_type inferred from the columns (question, context, answers): question_answering")
        # a document task may still be inferred below; it reads the same columns as any document task
        columns = self.task.input_columns(self) if self.task is not None else document_columns(self)
        for split, ds in raw.items():
            missing = [(c, key) for c, key in columns if c not in ds.column_names]
            if missing:
                column, key = missing[0]
                hint = column_hint(ds.column_names)
                raise UserError(
                    f"column '{column}' not in the {split} split of {self.describe_source(split)} "
                    f"(columns: {shown_columns(ds.column_names)}); {hint or f'set {key}'}"
                )
            if self.task is not None and self.task.per_token:
                raw[split] = decode_class_labels(ds, self.tags_column)
        raw = datasets.DatasetDict({split: self._check_rows(split, ds) for split, ds in raw.items()})
        if self.task is None:
            train = raw["train"]
            self.task = infer_task(train.features[self.label_column], train[self.label_column], self.label_separator)
            rank_zero_info(f"model.problem_type inferred from the training labels: {self.task.name}")
        task = self.task
        normalise = task.row_normaliser(self)
        written = task.row_features()

        def output_features(ds: datasets.Dataset) -> datasets.Features:
            # explicit, so a batch of only empty label lists cannot be typed as list<null>
            kept = {k: v for k, v in ds.features.items() if k not in written}
            return datasets.Features({**kept, **written})

        raw = datasets.DatasetDict(
            {
                split: ds.map(
                    normalise,
                    remove_columns=[c for c in ds.column_names if c in written],
                    features=output_features(ds),
                )
                for split, ds in raw.items()
            }
        )
        for split, ds in raw.items():
            if len(ds) == 0:
                raise UserError(f"the {split} split of {self.describe_source(split)} is empty")
        self.label_names = task.label_names({split: ds["label"] for split, ds in raw.items()},
                                            {split: self.describe_source(split) for split in raw})
        raw = self._split_hygiene(raw)
        if "validation" not in raw:
            raw["train"], raw["validation"] = self._validation_split(raw["train"], task)
        self.raw = raw

    def is_squad(self, columns: Sequence[str]) -> bool:
        """SQuAD's columns and no label column: question answering, whatever else could be inferred."""
        return self.label_column not in columns and all(
            c in columns for c in (self.question_column, self.context_column, self.answers_column))

    def _split_hygiene(self, raw: datasets.DatasetDict) -> datasets.DatasetDict:
        """Test documents whose text (whitespace collapsed) or ``id`` also occurs in train or validation make
        test metrics overstate (the Longformer Hyperpartisan split leaked so, allenai/longformer#181): the
        training copies are dropped with a count (``data.drop_test_duplicates=true``), else one warning."""
        if "test" not in raw or "text" not in raw["test"].column_names:
            return raw
        test_rows: dict[str, set[int]] = {}
        for i, keys in enumerate(split_keys(raw["test"])):
            for key in keys:
                test_rows.setdefault(key, set()).add(i)
        overlap: set[int] = set()
        found: dict[str, list[int]] = {}
        for split in ("train", "validation"):
            if split in raw:
                found[split] = []
                for i, keys in enumerate(split_keys(raw[split])):
                    hits = set().union(*(test_rows.get(key, set()) for key in keys))
                    if hits:
                        found[split].append(i)
                        overlap |= hits
        self.test_overlap = len(overlap)
        if not overlap:
            return raw
        if self.drop_test_duplicates:
            for split, rows in found.items():
                if rows:
                    drop = set(rows)
                    raw[split] = raw[split].select([i for i in range(len(raw[split])) if i not in drop])
            rank_zero_info(f"data.drop_test_duplicates: dropped {sum(map(len, found.values()))} train/validation "
                           f"documents that repeat {len(overlap)} test documents (same text or id)")
            self.test_overlap = 0
        else:
            rank_zero_only(log.warning)(
                f"{len(overlap)} of {len(raw['test'])} test documents also occur in train or validation (same text or "
                "id): test metrics overstate; set data.drop_test_duplicates=true to drop them from training")
        return raw

    def _validation_split(self, train: datasets.Dataset, task: Task) -> tuple[datasets.Dataset, datasets.Dataset]:
        """A seeded validation split of train: stratified where the task allows, else random. A split the
        data cannot give (too few rows per class) is one line; datasets' own error names neither key."""
        if not 0 < self.val_fraction < 1:
            raise UserError(f"data.val_fraction={self.val_fraction} must be between 0 and 1 (exclusive) to cut a "
                            "validation split from train; fix it or set data.validation_file")
        split = self._stratified_split if task.stratified_split else self._random_split
        try:
            return split(train)
        except ValueError as err:
            raise UserError(
                f"cannot cut a validation split of {self.val_fraction:.0%} from {len(train)} training rows "
                f"({str(err).splitlines()[0]}); add rows, raise data.val_fraction, or set data.validation_file"
            ) from None

    def _random_split(self, train: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Seeded validation split of train (multi-label and regression cannot be stratified)."""
        parts = train.train_test_split(test_size=self.val_fraction, seed=self.seed)
        return parts["train"], parts["test"]

    def _check_rows(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        """Bad rows end the run with their row numbers: the task knows what its rows hold (before a
        task is inferred: a document task's checks, missing labels and empty texts)."""
        return (self.task or Task()).check_rows(ds, split, self.describe_source(split), self)

    def _stratified_split(self, train: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Seeded validation split of train that keeps the class proportions."""
        parts = stratified_split(train, "label", self.val_fraction, self.seed)
        return parts["train"], parts["test"]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    @property
    def problem_type(self) -> str | None:
        return self.task.name if self.task is not None else None

    def train_labels(self) -> list[Any]:
        """The normalised training labels (``auto`` loss weights are computed from them)."""
        self.prepare_raw()
        return list(self.raw["train"]["label"])

    def train_texts(self) -> list[str]:
        self.prepare_raw()
        return list(self.raw["train"]["text"])

    # ------------------------------------------------------------ tokenized
    def connect(self, tokenizer: PreTrainedTokenizerBase, block_size: int, max_positions: int,
                block_aligned: bool = True, reader: Reader | Any = None) -> InputSpec:
        """The model hands over its tokenizer and what batches must fit (litgpt's ``DataModule.connect``):
        padding to its block size unless ``data.pad_to_multiple_of`` says otherwise, and its position
        table. The result is the run's ``InputSpec``: what the checkpoint stores and predict reads;
        ``reader`` (the ``reader.*`` keys, default sparse) says how a document becomes model inputs.

        Fails in seconds, before the first step, on lengths the model cannot take.
        """
        multiple = int(self.pad_to_multiple_of or block_size)
        if block_aligned and multiple % block_size != 0:
            raise UserError(
                f"data.pad_to_multiple_of={multiple} is not a multiple of model.block_size="
                f"{block_size}; set data.pad_to_multiple_of to a multiple of the block size"
            )
        reader = reader if isinstance(reader, Reader) else Reader.from_config(reader)
        inputs = InputSpec(
            max_length=self.max_length, pad_to_multiple_of=multiple, stride=self.chunk_stride,
            text_columns=tuple(self.text_columns), text_separator=self.text_separator,
            tokens_column=self.tokens_column, tags_column=self.tags_column, eval_batch_size=self.eval_batch_size,
            reader=reader, question_column=self.question_column, context_column=self.context_column,
            max_answer_length=self.max_answer_length, null_answers=self.null_answers,
        )
        padded_max = math.ceil(inputs.input_length / multiple) * multiple
        if padded_max > max_positions:
            key = "data.max_length" if reader.name == "sparse" else \
                ("reader.head_tokens / reader.tail_tokens" if reader.name == "head_tail" else "reader.window")
            raise UserError(
                f"a model input of {inputs.input_length} tokens (padded to {padded_max}) exceeds the model's "
                f"max_position_embeddings={max_positions}; lower {key}"
            )
        inputs.check(windows=bool(self.task and self.task.per_token), prefix="data.")
        if self.task is not None:
            self.task.check_reader(reader)
        self.inputs = inputs
        self.attach_tokenizer(tokenizer)
        return self.inputs

    def attach_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokenized = None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenized is not None:
            return
        if self.tokenizer is None or self.inputs is None:
            raise RuntimeError("connect() must hand over the tokenizer and lengths before setup()")
        self.prepare_raw()
        tokenizer, inputs, label2id = self.tokenizer, self.inputs, self.label2id
        max_length = inputs.max_length
        tok_key = tokenizer_fingerprint(tokenizer)
        started = time.perf_counter()

        tokenized = {}
        for split, ds in self.raw.items():
            reading = json.dumps(inputs.reader.to_dict(), sort_keys=True)
            fingerprint = hashlib.sha1(
                f"{FEATURES_VERSION}|{ds._fingerprint}|{tok_key}|{max_length}|{sorted(label2id.items())}|{self.problem_type}"
                f"|{reading}|{split == 'train'}{'|' + str(inputs.stride) if self.task.per_token else ''}".encode()
            ).hexdigest()[:16]
            tokenized[split] = ds.map(
                self.task.batch_encoder(tokenizer, inputs, label2id, train=split == "train"),
                batched=True,
                with_indices=True,
                remove_columns=ds.column_names,
                num_proc=self.num_proc,
                new_fingerprint=fingerprint,
                desc=f"tokenizing {split}",
            )
        self.tokenized = datasets.DatasetDict(tokenized)
        train = self.tokenized["train"]
        if "unknown_share" in train.column_names:  # document tasks
            rank_zero_only(warn_unknown_tokens)(train["unknown_share"], self.raw["train"]["text"], "training documents")
            cut = len({row for row, was_cut in zip(train["row"], train["cut"], strict=True) if was_cut})
            if cut:
                documents = len(self.raw["train"])
                limit = f"data.max_length={max_length} tokens" if inputs.reader.name == "sparse" else \
                    f"what reader={inputs.reader.name} reads ({inputs.input_length} tokens per input, {max_length} per document)"
                rank_zero_info(f"{cut} of {documents} training documents are longer than {limit} and are cut to it")
        # a cache hit (same data fingerprint, tokenizer and max_length) shows as a near-zero time
        files = self.tokenized["train"].cache_files
        log.info("token ids ready in %.2fs (%s)", time.perf_counter() - started,
                 f"cached in {Path(files[0]['filename']).parent}" if files else "in memory, not cached")

    # ----------------------------------------------------------- dataloaders
    def collator(self) -> BlockPaddingCollator:
        if self.inputs is None:
            raise RuntimeError("connect() must set the input specification first")
        return self.inputs.collator(self.tokenizer, self.task.stack_labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.tokenized[split]
        if not shuffle:
            # shortest first, as predict.py reads: a block-sparse encoder's output depends on how far a
            # sequence is padded (the padded last block takes the global last block's place), so batches of
            # like lengths keep val/test metrics to what predict.py gives, and pad less
            with warnings.catch_warnings():
                # datasets' sort still hands pyarrow (>= 25) the deprecated SortOptions(null_placement=...)
                warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
                ds = ds.sort("length")
        common = {"collate_fn": self.collator(), "num_workers": self.num_workers}
        if shuffle and self.bucket_by_length:
            sampler = LengthBucketBatchSampler(ds["length"], self.batch_size, seed=self.seed)
            return ResumableLoader(ds, batch_sampler=sampler, **common)
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


#: the name before token classification joined (kept for code that imports it)
TextClassificationDataModule = DocumentDataModule
