"""A resumable negation-lab run: one folder, per-seed results, chunks of seeds in worker processes.

Folder layout::

    config.json                          the settings results depend on (checked on resume)
    results/<experiment>/seed_007.json   one file per finished seed, written atomically
    runs.json                            one entry per invocation: wall time, CPU time, what it computed
    progress.jsonl                       one line per finished chunk (:mod:`symbiont_lab.progress`)
    report.md, summary.json, plots/      written by :mod:`.report` at the end

A run plans the seeds that have no result file yet, in chunks (``DEFAULT_CHUNK_SEEDS``
or ``chunk_seeds``; each chunk is one vectorised model), and hands the chunks to
``workers`` processes (spawned, each with single-threaded BLAS), largest first. A chunk's
seeds are saved as soon as it finishes, so a killed run loses at most the chunks in
flight; running the same command again computes only what is missing. More seeds than before extend a run; other changed
settings are refused (the error names ``config.json`` and the settings that differ).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..progress import ProgressLog
from ..run_folder import SeedResults, owned, prepare_config, run_entry
from .experiments import EXPERIMENTS, NegationConfig, run_unit, unit_cost

FORMAT_VERSION = 1
Progress = Callable[[str], None]


@dataclass
class Unit:
    experiment: str
    seeds: list[int]
    cost: float = 0.0


class RunFolder(SeedResults):
    """results/<experiment>/seed_NNN.json (:class:`~symbiont_lab.run_folder.SeedResults`)."""

    group_key = "experiment"

    def prepare(self, config: NegationConfig) -> None:
        """Write config.json, or check an existing one against ``config``."""
        prepare_config(self.config_path, {"format": FORMAT_VERSION, "lab": "negation", "settings": config.identity()},
                       expect={"format": FORMAT_VERSION}, error=ValueError,
                       kind=f"a negation-lab run configuration (format {FORMAT_VERSION})")

    def results(self, config: NegationConfig) -> dict[str, dict[int, dict]]:
        """Finished results of the seeds ``config`` asks for, by experiment and seed."""
        return self.collect({experiment: config.seeds_of(experiment) for experiment in config.experiments})


DEFAULT_CHUNK_SEEDS = {"sorted": 8, "collapse": 2, "representation": 2}
"""Seeds per chunk: 12–16 models per vectorised batch (sorted: 2 per seed; collapse: 6 per seed
in Gen1/Gen2; representation: 6 per seed), where MLX's CPU cost per seed-step is flat
(``benchmarks/negation_seeds.py``), in pieces small enough to share out between workers."""


def plan(folder: RunFolder, config: NegationConfig, chunk_seeds: int | None = None) -> list[Unit]:
    """Chunks of the seeds without a result file, largest first."""
    units = []
    for experiment in config.experiments:
        size = chunk_seeds or DEFAULT_CHUNK_SEEDS[experiment]
        missing = [s for s in range(config.seeds_of(experiment)) if folder.load_result(experiment, s) is None]
        for start in range(0, len(missing), size):
            seeds = missing[start:start + size]
            units.append(Unit(experiment, seeds, unit_cost(config, experiment, len(seeds))))
    return sorted(units, key=lambda u: -u.cost)


def _run_pool(units: list[Unit], workers: int, config_dict: dict, verbose: bool, finished) -> float:
    """Run ``units`` in spawned worker processes (one BLAS thread each); returns their CPU seconds."""
    import multiprocessing

    child_cpu = 0.0
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    for k in saved:
        os.environ.setdefault(k, "1")  # inherited by the spawned workers: one core each
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_work, config_dict, u.experiment, u.seeds, verbose): u for u in units}
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        unit = futures.pop(future)
                        _, _, results, seconds, cpu = future.result()
                        child_cpu += cpu
                        finished(unit, results, seconds)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return child_cpu


def default_workers() -> int:
    """Processes: one per core up to 4 on MLX's CPU backend, one on a GPU."""
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _work(config: dict, experiment: str, seeds: list[int], verbose: bool):
    """Worker-process entry: one unit; returns (experiment, seeds, results, seconds, cpu seconds)."""
    cpu = time.process_time()
    say = (lambda m: print(f"  [{os.getpid()}] {m}", file=sys.stderr, flush=True)) if verbose else None
    results, seconds = run_unit(config, experiment, seeds, say)
    return experiment, seeds, results, seconds, time.process_time() - cpu


@dataclass
class RunSummary:
    folder: Path
    computed: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    workers: int = 1


def run_lab(
    config: NegationConfig,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    chunk_seeds: int | None = None,
    progress: Progress | None = None,
    verbose: bool = True,
    on_unit_done: Callable[[Unit], None] | None = None,
) -> RunSummary:
    """Run (or resume) every missing seed of ``config`` in ``out_dir``. Does not write the report."""
    if chunk_seeds is not None and chunk_seeds < 1:
        raise ValueError(f"chunk_seeds must be at least 1, got {chunk_seeds}")
    folder = RunFolder(Path(out_dir))
    with owned(folder.path, folder.error):  # a second run on the same folder is refused, not interleaved
        return _run_lab(config, out_dir, workers=workers, chunk_seeds=chunk_seeds, progress=progress,
                        verbose=verbose, on_unit_done=on_unit_done)


def _run_lab(
    config: NegationConfig,
    out_dir: str | os.PathLike,
    workers: int | None = None,
    chunk_seeds: int | None = None,
    progress: Progress | None = None,
    verbose: bool = True,
    on_unit_done: Callable[[Unit], None] | None = None,
) -> RunSummary:
    say = progress or (lambda m: None)
    folder = RunFolder(Path(out_dir))
    folder.prepare(config)
    units = plan(folder, config, chunk_seeds)
    summary = RunSummary(folder.path, workers=1)
    for experiment in config.experiments:
        pending = {s for u in units if u.experiment == experiment for s in u.seeds}
        summary.skipped[experiment] = [s for s in range(config.seeds_of(experiment)) if s not in pending]
        if summary.skipped[experiment]:
            say(f"{experiment}: {len(summary.skipped[experiment])} seed(s) already done in {folder.path}, not recomputed")
    workers = min(workers or default_workers(), max(1, len(units)))
    summary.workers = workers
    started, cpu0 = time.perf_counter(), time.process_time()
    child_cpu = 0.0
    config_dict = {**config.identity(), "seeds": config.seeds, "representation_seeds": config.representation_seeds,
                   "experiments": list(config.experiments)}

    log = ProgressLog(folder.path)
    all_seeds = sum(config.seeds_of(e) for e in config.experiments)
    already = sum(len(v) for v in summary.skipped.values())
    log.emit("start", already, all_seeds, f"{len(units)} chunk(s) to run on {workers} worker(s)")

    def finished(unit: Unit, results: dict, seconds: float) -> None:
        for seed in unit.seeds:
            folder.save_result(unit.experiment, seed, results[seed], unit.seeds, seconds)
        summary.computed.setdefault(unit.experiment, []).extend(unit.seeds)
        done = sum(len(v) for v in summary.computed.values())
        total = sum(len(u.seeds) for u in units)
        log.emit(f"{unit.experiment} seeds {unit.seeds[0]}-{unit.seeds[-1]}", already + done, all_seeds,
                 f"{unit.experiment}: {len(unit.seeds)} seed(s) done in {seconds:.0f} s", seconds=seconds)
        say(f"{unit.experiment} seeds {unit.seeds} done in {seconds:.0f} s ({done}/{total} seed results, "
            f"{time.perf_counter() - started:.0f} s elapsed)")
        if on_unit_done:
            on_unit_done(unit)

    if units:
        say(f"{len(units)} chunk(s) to run on {workers} worker(s): "
            + ", ".join(f"{u.experiment}[{u.seeds[0]}-{u.seeds[-1]}]" for u in units))
    interrupted = True
    try:
        if workers <= 1:
            for unit in units:
                results, seconds = run_unit(config, unit.experiment, unit.seeds, say if verbose else None)
                finished(unit, results, seconds)
        elif units:
            child_cpu = _run_pool(units, workers, config_dict, verbose, finished)
        interrupted = False
        log.emit("done", all_seeds, all_seeds, "all seeds finished")
    finally:
        summary.wall_s = time.perf_counter() - started
        summary.cpu_s = time.process_time() - cpu0 + child_cpu
        if units:  # a killed run's time counts too (wall time over all invocations)
            folder.log_run(run_entry(summary.wall_s, interrupted, summary.computed, cpu_s=round(summary.cpu_s, 1),
                                     workers=workers, chunk_seeds=chunk_seeds or DEFAULT_CHUNK_SEEDS))
    return summary


__all__ = ["EXPERIMENTS", "RunFolder", "RunSummary", "Unit", "plan", "run_lab", "default_workers"]
