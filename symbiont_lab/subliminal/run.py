"""A subliminal-learning run: one resumable folder, stage by stage.

Folder layout::

    config.toml                        the user's file, copied (for reading; config.json is what counts)
    config.json                        the resolved configuration (checked on resume)
    prompts.json                       the number prompts, shared by every teacher
    teachers/<name>/responses.jsonl    {"i", "chunk", "text"} per response, appended as generated
    datasets/<name>/train.jsonl ...    mlx-lm chat datasets (one per student)
    students/<name>/                   LoRA adapters and checkpoint (:mod:`.student`)
    stages/<stage>.json                a finished stage's result; its presence marks the stage done
    progress.jsonl                     live progress (:mod:`symbiont_lab.progress`)
    runs.json                          one entry per invocation (wall time, stages computed)
    metrics.json, summary.md, plots/   written by :mod:`.report` from the stage files

Stages: prompts → generate (trait, control, fear teachers) → filter → datasets (trait,
control, and the variations) → train (one LoRA student per dataset) → probe (base and
every student) → mechanism → report. Every file is written atomically except the
append-only response and progress logs. A killed run resumes where it stopped: finished
stages are skipped, generation redoes only the unfinished chunk of prompts (responses
are generated in fixed chunks so a resumed chunk sees exactly the batches an
uninterrupted run would: the dataset is byte-identical), and LoRA training resumes from
its last checkpoint. Cancel with ``should_stop``, SIGINT or SIGTERM: the run stops at the next
safe point and raises :class:`RunCancelled`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from mlx_hooks.atomic_io import atomic_write_bytes
from mlx_hooks.errors import SymbiontError

from .. import run_folder
from ..progress import ProgressLog
from ..run_folder import dump_json, prepare_config, run_entry
from .config import RunConfig, config_to_dict
from .run_plan import Plan, StudentPlan, TeacherPlan, make_plan

FORMAT_VERSION = 1

Say = Callable[[str], None]


class RunCancelled(SymbiontError):
    """The run stopped early on request; running it again resumes it."""


class RunFolderError(SymbiontError):
    """A run folder that does not fit this configuration, or a damaged stage file."""


def read_json(path: Path, what: str):
    return run_folder.read_json(path, what, RunFolderError, "delete it to recompute that stage")


def _stored_has_decoding(path: Path) -> bool:
    """Whether a stored config.json names ``[numbers] decoding`` (True when there is none yet)."""
    if not path.exists():
        return True
    stored = read_json(path, "run configuration")
    numbers = stored.get("settings", {}).get("numbers") if isinstance(stored, dict) else None
    return not isinstance(numbers, dict) or "decoding" in numbers


@dataclasses.dataclass
class RunFolder:
    path: Path

    def stage_path(self, stage: str) -> Path:
        return self.path / "stages" / f"{stage}.json"

    def done(self, stage: str) -> bool:
        return self.stage_path(stage).is_file()

    def stage(self, stage: str) -> dict:
        return read_json(self.stage_path(stage), f"stage result ({stage})")

    def finish(self, stage: str, result: dict) -> dict:
        dump_json(self.stage_path(stage), result)
        return result

    def responses_path(self, teacher: str) -> Path:
        return self.path / "teachers" / teacher / "responses.jsonl"

    def dataset_dir(self, name: str) -> Path:
        return self.path / "datasets" / name

    def adapter_dir(self, name: str) -> Path:
        return self.path / "students" / name

    def prepare(self, config: RunConfig) -> None:
        """Write config.json (and copy the TOML), or check an existing run's against ``config``."""
        self.path.mkdir(parents=True, exist_ok=True)
        settings = config_to_dict(config)
        if settings["numbers"]["decoding"] == "free" and not _stored_has_decoding(self.path / "config.json"):
            # folders made before the setting existed decoded freely: they resume as before
            del settings["numbers"]["decoding"]
        existed = prepare_config(self.path / "config.json",
                                 {"format": FORMAT_VERSION, "experiment": "subliminal", "settings": settings},
                                 expect={"format": FORMAT_VERSION}, error=RunFolderError, same="the same configuration",
                                 kind=f"a subliminal-lab run configuration (format {FORMAT_VERSION})")
        if not existed and config.source and Path(config.source).is_file():
            atomic_write_bytes(self.path / "config.toml", Path(config.source).read_bytes())


class _Stopper:
    """``should_stop`` plus SIGINT and SIGTERM (main thread only): the first one asks the run to stop
    cleanly at the next safe point (a LoRA checkpoint, a finished chunk); a second Ctrl-C stops at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, should_stop: Callable[[], bool] | None):
        self.should_stop = should_stop
        self.flag = False
        self.previous: dict = {}

    def __call__(self) -> bool:
        if not self.flag and self.should_stop is not None and self.should_stop():
            self.flag = True
        return self.flag

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.flag and signum == signal.SIGINT:  # second Ctrl-C: stop now
                    raise KeyboardInterrupt
                self.flag = True
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    self.previous[name] = signal.signal(getattr(signal, name), handler)
        return self

    def __exit__(self, *exc):
        for name, previous in self.previous.items():
            signal.signal(getattr(signal, name), previous)
        self.previous = {}
        return False

    def check(self, where: str) -> None:
        if self():
            raise RunCancelled(f"stopped during {where}; run the same command again to resume")


class SubliminalRun:
    """Runs (or resumes) ``config`` in ``out_dir``; :meth:`run` returns the metrics."""

    def __init__(self, config: RunConfig, out_dir: str | os.PathLike, *, say: Say | None = None,
                 should_stop: Callable[[], bool] | None = None, report: bool = True, plots: bool = True):
        self.config = config
        self.folder = RunFolder(Path(out_dir))
        self.say = say or (lambda m: None)
        self.stop = _Stopper(should_stop)
        self.plan: Plan = make_plan(config)
        self.log = ProgressLog(self.folder.path)
        self.write_report = report
        self.plots = plots
        self._base = None
        self.computed: list[str] = []

    # -- progress ---------------------------------------------------------------------------------
    def emit(self, stage: str, done: float, total: float, message: str = "", **metrics) -> None:
        self.log.emit(stage, done, total, message, **metrics)

    def _stage_count(self) -> tuple[int, int]:
        names = self.plan.stage_names()
        return sum(self.folder.done(n) for n in names), len(names)

    # -- models -----------------------------------------------------------------------------------
    def base(self):
        """The base model, loaded once (and dropped while students train)."""
        if self._base is None:
            from .run_stages import load_base

            self._base = load_base(self.config)
        return self._base

    def drop_base(self) -> None:
        if self._base is not None:
            import mlx.core as mx

            self._base = None
            mx.clear_cache()

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict:
        with run_folder.owned(self.folder.path, RunFolderError):
            return self._run()

    def _run(self) -> dict:
        from . import run_stages as stages

        started, cpu0 = time.perf_counter(), time.process_time()
        self.folder.prepare(self.config)
        done, total = self._stage_count()
        self.emit("start", done, total, f"{total - done} of {total} stage(s) to run")
        self.say(f"subliminal lab -> {self.folder.path}: {total - done} of {total} stage(s) to run")
        interrupted = True
        try:
            with self.stop:
                stages.make_prompts(self)
                stages.check_memory(self)
                for teacher in self.plan.teachers:
                    stages.generate(self, teacher)
                    stages.filter_teacher(self, teacher)
                for student in self.plan.students:
                    stages.make_dataset(self, student)
                self.drop_base()
                for student in self.plan.students:
                    stages.train(self, student)
                for target in self.plan.probe_targets():
                    stages.probe(self, target)
                if self.config.mechanism.enabled:
                    stages.mechanism(self)
                self.drop_base()
            interrupted = False
        finally:
            wall = time.perf_counter() - started
            self._log_run(wall, time.process_time() - cpu0, interrupted)
        done, total = self._stage_count()
        self.emit("done", done, total, "all stages finished")
        metrics = {}
        if self.write_report:
            from .report import write_report

            metrics = write_report(self.folder.path, plots=self.plots)
        return metrics

    def _log_run(self, wall: float, cpu: float, interrupted: bool) -> None:
        # Logged from a ``finally``: a damaged runs.json is started afresh rather than hiding the run's own error.
        run_folder.append_run(self.folder.path, run_entry(wall, interrupted, self.computed, cpu_s=round(cpu, 1)),
                              RunFolderError, strict=False)


def run_subliminal(config: RunConfig, out_dir: str | os.PathLike, *, say: Say | None = None,
                   should_stop: Callable[[], bool] | None = None, report: bool = True, plots: bool = True) -> dict:
    """Run (or resume) a subliminal-learning experiment in ``out_dir``; returns the metrics (``metrics.json``)."""
    return SubliminalRun(config, out_dir, say=say, should_stop=should_stop, report=report, plots=plots).run()


def default_out(config: RunConfig) -> Path:
    return Path("out/lab/subliminal") / config.name


def remove_run(out_dir: str | os.PathLike) -> None:
    """Delete a run folder (only if it is one)."""
    path = Path(out_dir)
    if not (path / "config.json").is_file():
        raise RunFolderError(f"{path}: not a run folder (no config.json)")
    shutil.rmtree(path)


__all__ = ["RunCancelled", "RunFolder", "RunFolderError", "SubliminalRun", "TeacherPlan", "StudentPlan",
           "default_out", "run_subliminal"]
