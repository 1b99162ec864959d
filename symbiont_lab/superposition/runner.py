"""A resumable superposition-lab run: one folder, one result file per (experiment, seed).

Folder layout::

    config.json                          settings results depend on (+ the SAE's fingerprint), checked on resume
    results/<experiment>/seed_000.json   one file per finished (experiment, seed), written atomically
    progress.jsonl                       toy training progress (:mod:`symbiont_lab.progress`)
    runs.json                            one entry per invocation: wall time, what it computed
    report.md, summary.json, plots/      written by :mod:`.report` at the end

A unit is one (experiment, seed): seconds to a minute of CPU here. A killed run loses at most
the unit in flight; the same command again computes only what is missing. More seeds or other
experiments extend a run; other changed settings are refused, naming ``config.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..progress import ProgressLog
from ..run_folder import SeedResults, owned, prepare_config, run_entry
from .experiments import LabConfig, SuperpositionError, load_decoder, run_unit

FORMAT_VERSION = 1
RESULT_KEYS = {"phase": "sweeps", "geometry": "sweeps", "pictures": "sweeps", "interference": "sweeps",
               "xor": "variants", "interference_sae": "sweep"}
"""The key every stored result of an experiment must have."""


class RunFolder(SeedResults):
    """results/<experiment>/seed_NNN.json (:class:`~symbiont_lab.run_folder.SeedResults`)."""

    group_key = "experiment"
    error = SuperpositionError

    def valid_result(self, result: dict) -> bool:
        return any(key in result for key in RESULT_KEYS.values())

    def prepare(self, config: LabConfig, sae_fingerprint: dict | None) -> None:
        """Write config.json, or check an existing one against ``config``."""
        prepare_config(self.config_path, {"format": FORMAT_VERSION, "lab": "superposition",
                                          "settings": config.identity(sae_fingerprint)},
                       expect={"lab": "superposition"}, kind="a superposition-lab run configuration",
                       error=SuperpositionError)

    def results(self, config: LabConfig) -> dict[str, dict[int, dict]]:
        """Finished results of what ``config`` asks for: ``{experiment: {seed: result}}``."""
        return self.collect({e: config.seeds for e in config.experiments})


@dataclass
class RunSummary:
    folder: Path
    computed: dict[str, list[int]] = field(default_factory=dict)
    skipped: dict[str, list[int]] = field(default_factory=dict)
    wall_s: float = 0.0
    sae: dict | None = None


def run_lab(config: LabConfig, out_dir: str | os.PathLike, progress: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> RunSummary:
    """Run (or resume) every missing (experiment, seed) of ``config`` in ``out_dir``. Does not write the report.

    ``should_stop()`` is asked between units; when it turns true the run stops there (what is
    finished is saved) and the summary's ``computed`` says how far it got.
    """
    say = progress or (lambda m: None)
    decoder, sae = None, None
    if "interference_sae" in config.experiments:
        decoder, sae = load_decoder(config.sae_path)  # a bad SAE is refused before any folder is made
    folder = RunFolder(Path(out_dir))
    with owned(folder.path, folder.error):  # a second run on the same folder is refused, not interleaved
        return _run_units(config, folder, decoder, sae, say, should_stop)


def _run_units(config: LabConfig, folder: RunFolder, decoder, sae: dict | None, say: Callable[[str], None],
               should_stop: Callable[[], bool] | None) -> RunSummary:
    folder.prepare(config, sae)
    summary = RunSummary(folder.path, sae=sae)
    units = []
    for experiment in config.experiments:
        missing = [s for s in range(config.seeds) if folder.load_result(experiment, s) is None]
        summary.skipped[experiment] = [s for s in range(config.seeds) if s not in missing]
        if summary.skipped[experiment]:
            say(f"{experiment}: {len(summary.skipped[experiment])} seed(s) already done in {folder.path}, not recomputed")
        units += [(experiment, s) for s in missing]
    total = len(config.experiments) * config.seeds
    done = total - len(units)
    log = ProgressLog(folder.path)
    log.emit("start", done, total, f"{len(units)} unit(s) to run: " + ", ".join(f"{e} seed {s}" for e, s in units))

    def on_step(what: str, step: int, steps: int, loss: float) -> None:
        log.emit(what, done + step / steps, total, f"step {step}/{steps}", loss=loss)

    started = time.perf_counter()
    interrupted = True
    try:
        for experiment, seed in units:
            if should_stop is not None and should_stop():
                say("stopped: the finished units are saved; run the same command again to continue")
                break
            say(f"{experiment} seed {seed} ...")
            result, seconds = run_unit(config, experiment, seed, decoder, on_step)
            folder.save_result(experiment, seed, result, [seed], seconds)
            summary.computed.setdefault(experiment, []).append(seed)
            done += 1
            log.emit(f"{experiment} seed {seed}", done, total, f"done in {seconds:.1f} s")
            say(f"{experiment} seed {seed}: done in {seconds:.1f} s")
        else:
            interrupted = False
            log.emit("done", total, total, "all units finished")
    finally:
        summary.wall_s = time.perf_counter() - started
        if units:
            folder.log_run(run_entry(summary.wall_s, interrupted, summary.computed))
    return summary


__all__ = ["RunFolder", "RunSummary", "run_lab"]
