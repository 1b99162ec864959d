"""A resumable auxiliary-logit run: one folder, one result file per (m, seed).

Folder layout::

    config.json                        settings results depend on + the data's fingerprint (checked on resume)
    results/m003/seed_002.json         one file per finished (m, seed), written atomically
    progress.jsonl                     one line per epoch (:mod:`symbiont_lab.progress`)
    runs.json                          one entry per invocation: wall time, what it computed
    report.md, summary.json, plots/    written by :mod:`.report` at the end

Units are (m, chunk of seeds) trained as one stacked model, run one after the other in
this process (the networks are small: a chunk of 5 seeds takes ~15 s on 2 CPU cores). A
unit's seeds are saved when it finishes, so a killed run loses at most the unit in
flight; the same command again computes only what is missing. More seeds or other m extend
a run; other changed settings are refused, naming ``config.json`` and what differs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..progress import ProgressLog
from ..run_folder import SeedResults, owned, prepare_config, run_entry
from .data import AuxDataError, Dataset, load_dataset
from .experiments import ROLES, AuxConfig, UnitProgress, run_unit, unit_steps

FORMAT_VERSION = 1
DEFAULT_CHUNK_SEEDS = 5
"""Seeds per stacked model. ``benchmarks/aux_logits_seeds.py``: 5 seeds stacked ran 1.71x faster
than one at a time (2 shared CPU cores, OpenBLAS), with the same accuracies."""


class AuxRunError(AuxDataError):
    """A run folder whose files do not fit this run (names the file)."""


class RunFolder(SeedResults):
    """results/m003/seed_NNN.json (:class:`~symbiont_lab.run_folder.SeedResults`)."""

    group_key = "m"
    error = AuxRunError

    def group_dir(self, m: int) -> str:
        return f"m{m:03d}"

    def describe(self, m: int) -> str:
        return f"m={m}"

    def valid_result(self, result: dict) -> bool:
        return set(result.get("accuracy", {})) == set(ROLES)

    def prepare(self, config: AuxConfig, data: Dataset) -> None:
        """Write config.json, or check an existing one against ``config`` and ``data``."""
        identity = {**config.identity(), "data_fingerprint": data.fingerprint}
        prepare_config(self.config_path, {"format": FORMAT_VERSION, "lab": "aux-logits", "settings": identity,
                                          "data_source": data.source},
                       expect={"lab": "aux-logits"}, kind="an aux-logits run configuration", error=AuxRunError)

    def results(self, config: AuxConfig) -> dict[int, dict[int, dict]]:
        """Finished results of the (m, seed) pairs ``config`` asks for: ``{m: {seed: result}}``."""
        return self.collect({m: config.seeds for m in config.aux})


@dataclass
class Unit:
    m: int
    seeds: list[int]


@dataclass
class RunSummary:
    folder: Path
    computed: dict[int, list[int]] = field(default_factory=dict)
    skipped: dict[int, list[int]] = field(default_factory=dict)
    wall_s: float = 0.0


def plan(folder: RunFolder, config: AuxConfig, chunk_seeds: int | None = None) -> list[Unit]:
    """Chunks of the (m, seed) pairs without a result file, in the order of ``config.aux``."""
    size = chunk_seeds or DEFAULT_CHUNK_SEEDS
    units = []
    for m in config.aux:
        missing = [s for s in range(config.seeds) if folder.load_result(m, s) is None]
        units += [Unit(m, missing[i:i + size]) for i in range(0, len(missing), size)]
    return units


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def run_lab(config: AuxConfig, out_dir: str | os.PathLike, data: Dataset | None = None,
            chunk_seeds: int | None = None, progress: Callable[[str], None] | None = None,
            on_unit_done: Callable[[Unit], None] | None = None) -> RunSummary:
    """Run (or resume) every missing (m, seed) of ``config`` in ``out_dir``. Does not write the report."""
    if chunk_seeds is not None and chunk_seeds < 1:
        raise ValueError(f"chunk_seeds must be at least 1, got {chunk_seeds}")
    folder = RunFolder(Path(out_dir))
    with owned(folder.path, folder.error):  # a second run on the same folder is refused, not interleaved
        return _run_lab(config, out_dir, data=data, chunk_seeds=chunk_seeds, progress=progress,
                        on_unit_done=on_unit_done)


def _run_lab(config: AuxConfig, out_dir: str | os.PathLike, data: Dataset | None = None,
             chunk_seeds: int | None = None, progress: Callable[[str], None] | None = None,
             on_unit_done: Callable[[Unit], None] | None = None) -> RunSummary:
    say = progress or (lambda m: None)
    data = data or load_dataset()
    config = AuxConfig(**{**config.__dict__, "dataset": data.name})
    folder = RunFolder(Path(out_dir))
    folder.prepare(config, data)
    units = plan(folder, config, chunk_seeds)
    summary = RunSummary(folder.path)
    pending = {(u.m, s) for u in units for s in u.seeds}
    for m in config.aux:
        summary.skipped[m] = [s for s in range(config.seeds) if (m, s) not in pending]
        if summary.skipped[m]:
            say(f"m={m}: {len(summary.skipped[m])} seed(s) already done in {folder.path}, not recomputed")
    per_seed = unit_steps(config, len(data.x_train))  # optimizer steps one seed's four networks take
    total = per_seed * config.seeds * len(config.aux)
    finished_steps = per_seed * sum(len(v) for v in summary.skipped.values())
    log = ProgressLog(folder.path)
    log.emit("start", finished_steps, total, f"{len(units)} unit(s) to run ({data.name}, m = "
             + ",".join(map(str, config.aux)) + f", {config.seeds} seed(s))")

    def on_epoch(p: UnitProgress) -> None:
        step = p.step
        names = ("teacher",) if step.phase == "teacher" else ROLES[1:]
        metrics = {"loss": _mean(step.loss)}
        metrics.update({f"{name}_accuracy": _mean(step.accuracy[r]) for r, name in enumerate(names)})
        log.emit(f"m={p.m} seeds {p.seeds[0]}-{p.seeds[-1]}: {step.phase}",
                 finished_steps + p.steps_done * len(p.seeds), total,
                 f"{step.phase} epoch {step.epoch}", **metrics)

    started = time.perf_counter()
    interrupted = True
    try:
        for unit in units:
            say(f"m={unit.m}: seeds {unit.seeds} ...")
            results, seconds = run_unit(config, unit.m, unit.seeds, data, on_epoch)
            for seed in unit.seeds:
                folder.save_result(unit.m, seed, results[seed], unit.seeds, seconds)
            summary.computed.setdefault(unit.m, []).extend(unit.seeds)
            finished_steps += per_seed * len(unit.seeds)
            acc = {role: np.mean([results[s]["accuracy"][role] for s in unit.seeds]) for role in ROLES}
            say(f"m={unit.m}: seeds {unit.seeds} done in {seconds:.1f} s: "
                + ", ".join(f"{role} {100 * a:.1f}%" for role, a in acc.items()))
            if on_unit_done:
                on_unit_done(unit)
        interrupted = False
        log.emit("done", total, total, "all seeds finished")
    finally:
        summary.wall_s = time.perf_counter() - started
        if units:
            folder.log_run(run_entry(summary.wall_s, interrupted, {str(m): s for m, s in summary.computed.items()}))
    return summary


__all__ = ["AuxRunError", "RunFolder", "RunSummary", "Unit", "plan", "run_lab"]
