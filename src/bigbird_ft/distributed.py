"""DDP under Hydra: one process per device, one run dir per job, multirun-safe.

Lightning's DDP launcher re-runs the script for ranks >= 1 with ``sys.argv`` plus
``hydra.run.dir=<hydra.run.dir>``. In a single run that is fine, but under ``-m`` the child would
start a whole new sweep (``-m`` and the sweep lists are in ``sys.argv``) in the wrong dir, and the
second job of a sweep would hang: the launcher leaves ``LOCAL_RANK`` etc. in ``os.environ``, so
Lightning then believes the processes were created externally (Lightning PR #18175 is still open).

``HydraDDPStrategy`` is Lightning's ``DDPStrategy`` with the child command built from the current
*job* instead: its overrides (``hydra.overrides.task``), ``hydra.run.dir`` = the job's output dir,
``hydra.mode=RUN`` and no second ``.hydra/``. ``ddp_job_scope`` tears the process group and the
launcher's environment down after each job, so the next job of a sweep launches its own ranks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch.distributed as dist
from filelock import FileLock
from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script as pl_launcher

# what Lightning's launcher writes into os.environ of the launching process
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# hydra overrides that describe the sweep, not the job: a rank >= 1 must not see them
SWEEP_ONLY_PREFIXES = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.output_subdir",
    "hydra.job.name",
)

log = logging.getLogger(__name__)
_launched: list[subprocess.Popen] = []


def hydra_job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command that re-creates exactly the current Hydra job for ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    hydra_overrides = [
        o for o in hydra_cfg.overrides.hydra if not o.lstrip("+~").startswith(SWEEP_ONLY_PREFIXES)
    ]
    output_dir = str(hydra_cfg.runtime.output_dir).replace('"', '\\"')
    command += [
        *hydra_cfg.overrides.task,
        *hydra_overrides,
        f'hydra.run.dir="{output_dir}"',
        "hydra.mode=RUN",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        # the launching rank already wrote .hydra/ into this dir
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


class _HydraJobLauncher(pl_launcher._SubprocessScriptLauncher):
    """Lightning's launcher; only the Hydra command of the children differs."""

    def _call_children_scripts(self) -> None:
        with (
            mock.patch.object(pl_launcher, "_hydra_subprocess_cmd", hydra_job_command),
            mock.patch.object(fabric_launcher, "_hydra_subprocess_cmd", hydra_job_command),
        ):
            super()._call_children_scripts()
        _launched.extend(self.procs)


class HydraDDPStrategy(DDPStrategy):
    """``strategy=ddp`` that re-launches the current Hydra job (run or multirun) for ranks >= 1."""

    strategy_name = "hydra_ddp"

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, pl_launcher._SubprocessScriptLauncher):
            self._launcher = _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


@contextlib.contextmanager
def ddp_job_scope(wait_s: float = 120.0) -> Iterator[None]:
    """After a job: end its process group (every rank), wait for the ranks it launched, restore os.environ.

    Every rank destroys its process group: a rank that exits with gloo's threads still running can
    die in ``std::terminate`` ("terminate called without an active exception", exit -6), and
    Lightning's child-process observer then SIGKILLs the launching rank, in the middle of the
    next job of a sweep. Environment set by torchrun or SLURM (present before the job) is left alone.
    """
    before = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for proc in list(_launched):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
            if proc.returncode:
                log.error(f"DDP rank process {proc.pid} exited with code {proc.returncode}")
            _launched.remove(proc)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def one_process_at_a_time(folder: str | os.PathLike) -> Iterator[None]:
    """Serialise data/tokenizer preparation of all ranks (and parallel jobs) sharing a cache.

    The first holder generates and caches; the others then find everything cached. Runs before
    the process group exists, hence a file lock and not a barrier.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".prepare.lock")):
        yield


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def predict_strategy(name: str) -> str | DDPStrategy:
    """``strategy=ddp``: one process per device; the Hydra-aware launcher re-runs this job."""
    if name == "ddp":
        return HydraDDPStrategy()
    return name
