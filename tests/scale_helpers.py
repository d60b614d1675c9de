"""Callbacks the scale tests inject with ``+callbacks.NAME._target_=tests.scale_helpers.X``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class RecordRows(L.Callback):
    """Writes the training rows each rank saw per epoch to ``<dir>/rows-rank<R>.json``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["row"].tolist())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        out = self.dirpath / f"rows-rank{trainer.global_rank}.json"
        out.write_text(json.dumps({"world": trainer.world_size, "epochs": self.seen}))


class KillAtStep(L.Callback):
    """SIGKILLs its own process once ``global_step`` reaches ``step`` (a crash without cleanup)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def read_wandb_records(path: Path) -> list[Any]:
    """Records of an offline ``run-*.wandb`` file (wandb >= 0.2x writes config and history only there).

    The file is a LevelDB-style log: a 7-byte W&B header, then 32 KiB blocks of chunks with a
    7-byte header (crc32c, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block tail too short for a header is padding
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run_contents(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(config, history rows) of an offline run file, values JSON-decoded."""
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return config, history


def assert_ranks_exited_cleanly(result: Any) -> None:
    """No DDP rank died on the way out (a dead rank 1 gets rank 0 SIGKILLed mid-sweep)."""
    output = result.stdout + result.stderr
    assert "terminate called" not in output, output[-2000:]
    assert "exited with code" not in output, output[-2000:]
    assert "Forcefully terminating" not in output, output[-2000:]
