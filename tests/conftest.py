"""Shared fixtures: tiny configs, a tiny trained tokenizer, CLI runners, shared-data discovery."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest


def _share_cores_between_workers() -> None:
    """Give each pytest-xdist worker (and the train/predict subprocesses it starts) its share of the cores.

    torch's OpenMP pool sizes itself to every core, so two workers each training a model ask for twice the
    cores there are, and their spinning threads slow both: two copies of bench/long_docs.py's test run side by
    side took 175 s each with the default pool, 61 s each with one thread each (docs/development.md).
    Set here, before torch is imported, so the worker's own torch and every child process inherit it; an
    OMP_NUM_THREADS the user set wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


_share_cores_between_workers()

import bigbird_ft  # noqa: E402, F401  (registers the configs' resolvers for tests that compose configs)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PYTHON = sys.executable

warnings.filterwarnings("ignore", message=".*Attention type 'block_sparse' is not possible.*")


def in_ci() -> bool:
    """CI=true as .ci/run sets it, and the other truthy spellings (CI=1, yes) that CI systems use."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def shared_path(relative: str) -> Path:
    """A file under ../shared; skipped when absent, a failure in CI (where it must exist)."""
    path = SHARED / relative
    if not path.exists():
        if in_ci():
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} not present")
    return path


def require_module(name: str, reason: str):
    """``pytest.importorskip`` outside CI; in CI (where make setup installs every extra) a failure."""
    if in_ci():
        import importlib

        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)


SESSION_CACHE: dict[str, Path] = {}

# The generated corpus of test_learnability and test_long_docs (documents of ~200-900 words): one spec,
# so a session generates it and trains its tokenizer once for both.
LEARNABILITY_CORPUS: dict[str, object] = {
    "data.spec.num_train": 480,
    "data.spec.num_validation": 80,
    "data.spec.num_test": 160,
    "data.spec.min_words": 200,
    "data.spec.max_words": 900,
    "trainer.max_epochs": 3,
}


@pytest.fixture(scope="session", autouse=True)
def session_data_cache(tmp_path_factory):
    """Generated corpora and tokenizers are keyed by content, so tests may share them."""
    SESSION_CACHE["root"] = tmp_path_factory.mktemp("shared-cache")
    yield SESSION_CACHE["root"]


def tiny_overrides(tmp: Path, **extra: object) -> list[str]:
    """Overrides that shrink the default experiment to a seconds-long CPU run inside ``tmp``."""
    cache_root = SESSION_CACHE.get("root", tmp)
    values: dict[str, object] = {
        # named: data=files / data=hub would otherwise pick the pretrained MiniLM
        "model": "bigbird_tiny",
        "data.spec.num_train": 48,
        "data.spec.num_validation": 16,
        "data.spec.num_test": 16,
        "data.spec.min_words": 60,
        "data.spec.max_words": 400,
        "data.max_length": 512,
        "data.batch_size": 8,
        "data.eval_batch_size": 8,
        "model.tokenizer_vocab_size": 400,
        "model.block_size": 16,
        "model.num_random_blocks": 2,
        "model.config.hidden_size": 32,
        "model.config.num_attention_heads": 2,
        "model.config.intermediate_size": 64,
        "model.config.max_position_embeddings": 1024,
        "trainer.max_epochs": 1,
        "trainer.accelerator": "cpu",
        "trainer.log_every_n_steps": 1,
        "callbacks.rich_progress_bar": "null",
        "paths.generated_dir": str(cache_root / "generated"),
        "paths.cache_dir": str(cache_root / "cache"),
        "paths.log_dir": str(tmp / "logs"),
        "hydra.run.dir": str(tmp / "run"),
        "hydra.sweep.dir": str(tmp / "multirun"),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def run_script(script: str, args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [PYTHON, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny default run (no test, no export) for the tests that only read it: predict, evidence, serve."""
    tmp = tmp_path_factory.mktemp("trained")
    result = run_script("train.py", tiny_overrides(tmp, test="false", export="false"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A SentencePiece tokenizer trained on a small generated corpus (cached per session)."""
    from bigbird_ft.data.synthetic import SyntheticCorpus, SyntheticSpec
    from bigbird_ft.models.tokenizer import resolve_tokenizer

    spec = SyntheticSpec(min_words=60, max_words=300)
    rows = SyntheticCorpus(spec).split("train", 40)
    cache = tmp_path_factory.mktemp("tok-cache")
    return resolve_tokenizer("train", [r["text"] for r in rows], vocab_size=400, cache_dir=cache)


TINY_MODEL = {
    "pretrained": None,
    "tokenizer": "train",
    "block_size": 16,
    "num_random_blocks": 2,
    "config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 1024,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}


@pytest.fixture
def make_classifier(tiny_tokenizer):
    """Build a tiny BigBirdClassifier with the given backend and head."""
    from bigbird_ft.models.factory import build_classifier

    def factory(attention: str = "hf_block_sparse", head: str = "cls", num_labels: int = 3, **head_opts):
        return build_classifier(
            model=TINY_MODEL,
            attention={"name": attention},
            head={"name": head, "dropout": 0.0, **head_opts},
            id2label={i: f"label_{chr(97 + i)}" for i in range(num_labels)},
            tokenizer=tiny_tokenizer,
            optim={"lr": 1e-3},
            data={"max_length": 512, "pad_to_multiple_of": 16, "text_column": "text"},
        )

    return factory


#: the slowest tests of a full `make test` (CI's --durations=15, 2026-12-07), longest first. xdist's
#: workers take the collection's tail last, and the tail was tests/training's long trainings, so one
#: worker sat idle while the other finished a 4-minute test: starting the longest slow tests first
#: leaves short ones to balance the end (longest-processing-time-first scheduling).
LONGEST_FIRST = {name: rank for rank, name in enumerate((
    "test_multirun_over_every_offline_experiment",
    "test_gpu_bench_dry_run_fills_every_part",
    "test_calibration_estimate_and_evidence_benches_write_their_json",
    "test_quality_bench_rows_have_seeds_and_error_bars",
    "test_chunk_labels_documents_whose_evidence_truncation_cuts",
    "test_default_recipe_reads_the_evidence_and_truncation_guesses",
    "test_chunked_predict_on_every_pep",
    "test_default_run_bench_reports_seeds_truncation_and_heads",
))}


def pytest_collection_modifyitems(config, items):
    """Fast tests first, slow ones after: a broken build fails in minutes, not after the slow half; among
    the slow ones the longest start first (LONGEST_FIRST)."""
    def order(item) -> tuple[bool, int]:
        rank = LONGEST_FIRST.get(item.name.split("[")[0], len(LONGEST_FIRST))
        return item.get_closest_marker("slow") is not None, rank

    items.sort(key=order)
