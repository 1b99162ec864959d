"""An inversion run: one resumable folder, stage by stage.

Folder layout::

    config.json                    the resolved configuration (checked on resume)
    stages/tasks.json, base.json   the task items (fixed across seeds) and the base model's replies
    seed_000/stages/<stage>.json   a finished stage's result; its presence marks the stage done
    seed_000/datasets/<name>/      mlx-lm chat datasets (train.jsonl, valid.jsonl)
    seed_000/adapters/<name>/      LoRA adapters + checkpoint (the subliminal lab's student trainer)
    progress.jsonl, runs.json      live progress; one entry per invocation
    summary.md, summary.json, plots/   written by :mod:`.report`

Per seed: teachers (the learned inversion's rounds first) → their replies on every split →
students per regime → mechanism. A killed run resumes where it stopped: finished stages are
skipped and a LoRA resumes from its last checkpoint. Cancel with ``should_stop``, SIGINT or
SIGTERM: the run stops at the next safe point and raises ``RunCancelled``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from mlx_hooks.errors import SymbiontError

from .. import run_folder
from ..progress import ProgressLog
from ..run_folder import dump_json, prepare_config, run_entry
from ..subliminal.run import RunCancelled, _Stopper
from .config import InversionConfig, config_to_dict

FORMAT_VERSION = 1


class InversionRunError(SymbiontError):
    """A run folder that does not fit this configuration, or a damaged stage file."""


class Stages:
    """Stage files of one folder (``stages/<name>.json``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / "stages" / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.file(name).is_file()

    def get(self, name: str):
        return run_folder.read_json(self.file(name), f"stage result ({name})", InversionRunError,
                                    "delete it to recompute that stage")

    def put(self, name: str, result):
        dump_json(self.file(name), result)
        return result

    def dataset_dir(self, name: str) -> Path:
        return self.path / "datasets" / name

    def adapter_dir(self, name: str) -> Path:
        return self.path / "adapters" / name


class InversionRun:
    def __init__(self, config: InversionConfig, out_dir: str | os.PathLike, *, say=None,
                 should_stop: Callable[[], bool] | None = None):
        self.config = config
        self.path = Path(out_dir)
        self.top = Stages(self.path)
        self.say = say or (lambda m: None)
        self.stop = _Stopper(should_stop)
        self.log = ProgressLog(self.path)
        self.computed: list[str] = []
        self._base = None
        self.done_units = 0

    def emit(self, stage: str, message: str = "", **metrics) -> None:
        self.log.emit(stage, self.done_units, self.total_units(), message, **metrics)

    def total_units(self) -> int:
        from .stages import units_per_seed

        return 2 + self.config.seeds * units_per_seed(self.config)

    def base(self):
        if self._base is None:
            from ..subliminal.run_stages import load_base

            self._base = load_base(self.config)
        return self._base

    def run(self) -> None:
        with run_folder.owned(self.path, InversionRunError):
            self._run()

    def _run(self) -> None:
        from . import stages

        started, cpu0 = time.perf_counter(), time.process_time()
        self.path.mkdir(parents=True, exist_ok=True)
        prepare_config(self.path / "config.json",
                       {"format": FORMAT_VERSION, "experiment": "inversion", "settings": config_to_dict(self.config)},
                       expect={"format": FORMAT_VERSION, "experiment": "inversion"}, error=InversionRunError,
                       kind=f"an inversion-lab run configuration (format {FORMAT_VERSION})",
                       same="the same configuration")
        self.emit("start", "inversion lab")
        interrupted = True
        try:
            with self.stop:
                stages.make_tasks(self)
                stages.base_replies(self)
                for seed in range(self.config.seeds):
                    stages.run_seed(self, seed)
            interrupted = False
        finally:
            run_folder.append_run(self.path, run_entry(time.perf_counter() - started, interrupted, self.computed,
                                                       cpu_s=round(time.process_time() - cpu0, 1)),
                                  InversionRunError, strict=False)
        self.emit("done", "all stages finished")


def run_inversion(config: InversionConfig, out_dir: str | os.PathLike, *, say=None,
                  should_stop: Callable[[], bool] | None = None, plots: bool = True, run_info: dict | None = None) -> dict:
    """Run (or resume) an inversion experiment in ``out_dir``; writes and returns the summary."""
    from .report import write_report

    InversionRun(config, out_dir, say=say, should_stop=should_stop).run()
    return write_report(Path(out_dir), config, plots=plots, run_info=run_info)


def default_out(config: InversionConfig) -> Path:
    return Path("out/lab/inversion") / config.name


__all__ = ["InversionRun", "InversionRunError", "RunCancelled", "Stages", "default_out", "run_inversion"]
