"""The lab panel's Qt-free state: which experiment, the command that runs it, its progress and report.

A lab experiment runs as a **separate process** (``python -m symbiont_app.cli lab ...`` with
this interpreter, or ``Symbiont --cli lab ...`` in the frozen app), never on the chat's engine
thread: its MLX models live and die with that process. The widget owns the ``QProcess``;
this model builds the command, takes the process's output and exit, tails the run folder's
``progress.jsonl`` (:func:`symbiont_lab.progress.read_progress`, incrementally) into a
progress fraction and metric curves, and reads the report and plots when the run ends.

Notifies ``state`` (idle/running/cancelling/finished/failed/cancelled), ``progress``,
``output`` and ``report``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from mlx_hooks.errors import SymbiontError
from symbiont_lab.progress import read_progress

from .observable import Observable
from .sae import attach

MAX_OUTPUT_CHARS = 200_000
"""The process output kept for the panel (the oldest text goes first)."""


class LabInputError(SymbiontError):
    """A lab setting that cannot run (no run folder, a missing config file)."""


@dataclass(frozen=True)
class LabExperiment:
    name: str
    """Id (the combo box data)."""
    title: str
    """What the user picks."""
    args: tuple[str, ...]
    """The ``symbiont`` sub-command."""
    needs_config: bool
    """Takes a run configuration file (``lab run <config>``)."""
    report: str
    """The run folder's report file."""


EXPERIMENTS: dict[str, LabExperiment] = {e.name: e for e in (
    LabExperiment("aux-logits", "Auxiliary logits: MLP on digits (minutes)", ("lab", "aux-logits"), False, "report.md"),
    LabExperiment("negation", "Learning through negation: TinyLSTM (minutes)", ("lab", "negation"), False, "report.md"),
    LabExperiment("subliminal", "Subliminal learning: teacher → numbers → LoRA student (config file)", ("lab", "run"),
                  True, "summary.md"),
    LabExperiment("inversion", "Inversion: wrong teachers → blind students (default config; ~1 h)", ("lab", "inversion"),
                  False, "summary.md"),
    LabExperiment("emergence", "Emergence: grokking live + effective information (~25 min)", ("lab", "emergence"),
                  False, "summary.md"),
    LabExperiment("superposition", "Superposition: toy models, XOR lesions, interference (minutes)",
                  ("lab", "superposition"), False, "report.md"),
    LabExperiment("probe", "Sparse probing: which layers and how many neurons carry a property (default model)",
                  ("probe",), False, "report.md"),
    LabExperiment("nmf", "NMF of MLP activations vs PCA and an SAE (default model)", ("nmf",), False, "report.md"),
)}

STATES = ("idle", "running", "cancelling", "finished", "failed", "cancelled")
PROGRESS_X_LABEL = "run progress (the lab's own count: steps, seeds…)"
STEP_METRIC = "step"
"""A progress record's metric with this name is the x of its other metrics (else the run's progress count)."""


def lab_program() -> tuple[str, list[str]]:
    """(program, leading arguments) that run a ``symbiont`` sub-command with this Python.

    The frozen app has no ``-m``: its entry (:mod:`symbiont_app.frozen_main`) runs
    ``Symbiont --cli <sub-command ...>`` through the same CLI.
    """
    if getattr(sys, "frozen", False):
        return sys.executable, ["--cli"]
    return sys.executable, ["-m", "symbiont_app.cli"]


def _contains(command: list[str], args: tuple[str, ...]) -> bool:
    n = len(args)
    return any(tuple(command[i:i + n]) == args for i in range(len(command) - n + 1))


def default_out(experiment: str) -> str:
    """``<user data>/lab/<experiment>`` (``~/Library/Application Support/Symbiont/lab/...`` on macOS)."""
    from ..bundle import lab_runs_dir

    return str(lab_runs_dir() / experiment)


class LabModel(Observable):
    def __init__(self, session=None):
        super().__init__()
        self.session = session
        self.experiment = "aux-logits"
        self.out = ""
        """Run folder; empty: :func:`default_out`."""
        self.config_path = ""
        """Run configuration (experiments that need one)."""
        self.extra_args = ""
        """More command-line options, shell-quoted (e.g. ``--seeds 2 --epochs 1``)."""
        self.state = "idle"
        self.exit_code: int | None = None
        self.last_command: list[str] | None = None
        self.run_experiment = self.experiment
        """The experiment of the running / last run (the form may show another meanwhile)."""
        self.run_dir: Path | None = None
        self.output = ""
        self._reset_progress()
        self.report_text = ""
        self.report_path: Path | None = None
        self.plots: list[Path] = []

    @classmethod
    def of(cls, session) -> "LabModel":
        return attach(session, "lab", cls)

    def handle_event(self, event) -> None:
        """Engine events do not concern the lab (it runs in its own process)."""

    # -- the command -------------------------------------------------------------------------------------
    def run_folder(self) -> Path:
        return Path(self.out.strip() or default_out(self.experiment)).expanduser()

    def command(self) -> list[str]:
        """The full command line for the current settings (program first); raises :class:`LabInputError`."""
        spec = EXPERIMENTS.get(self.experiment)
        if spec is None:
            raise LabInputError(f"unknown lab experiment {self.experiment!r} (choose one of {', '.join(EXPERIMENTS)})")
        args = list(spec.args)
        if spec.needs_config:
            config = self.config_path.strip()
            if not config:
                raise LabInputError(f"{spec.name}: choose a run configuration file (.toml)")
            if not Path(config).expanduser().is_file():
                raise LabInputError(f"{config}: no such configuration file")
            args.append(str(Path(config).expanduser()))
        try:
            extra = shlex.split(self.extra_args)
        except ValueError as exc:
            raise LabInputError(f"extra options {self.extra_args!r}: {exc}") from None
        if "--out" in extra:
            raise LabInputError("extra options: set the run folder in its own field, not with --out")
        program, lead = lab_program()
        return [program, *lead, *args, "--out", str(self.run_folder()), *extra]

    # -- the process's life (called by the widget) ----------------------------------------------------------
    def started(self, command: list[str]) -> None:
        """A process running ``command`` was started; progress is read from its run folder from the start."""
        self.last_command = list(command)
        self.run_experiment = next((e.name for e in EXPERIMENTS.values() if _contains(command, e.args)), self.experiment)
        self.run_dir = Path(command[command.index("--out") + 1])
        self.exit_code = None
        self.output = ""
        self.report_text, self.report_path, self.plots = "", None, []
        self._reset_progress()
        self._set_state("running")
        self.notify("report")
        self.notify("output")
        self.poll()

    def resume_command(self) -> list[str] | None:
        """The last command again (same folder: the run picks up what is missing), or None."""
        return list(self.last_command) if self.last_command else None

    def append_output(self, text: str) -> None:
        self.output = (self.output + text)[-MAX_OUTPUT_CHARS:]
        self.notify("output")

    def cancelling(self) -> None:
        if self.state == "running":
            self._set_state("cancelling")

    def finished(self, exit_code: int, crashed: bool = False) -> None:
        """The process ended: settle the state, read the last progress and the report."""
        self.exit_code = exit_code
        self.poll()
        if self.state == "cancelling":
            self._set_state("cancelled")
        elif exit_code == 0 and not crashed:
            self._set_state("finished")
        else:
            self._set_state("failed")
            tail = "\n".join(self.output.rstrip().splitlines()[-40:])
            if self.session is not None:
                self.session.error(f"lab {self.run_experiment} failed (exit code {exit_code})"
                                   + (": the process crashed" if crashed else ""), tail)
        self.load_report()

    def failed_to_start(self, message: str) -> None:
        self._set_state("failed")
        if self.session is not None:
            self.session.error(f"lab {self.run_experiment}: could not start {self.last_command[0] if self.last_command else ''}"
                               f" ({message})")

    def _set_state(self, state: str) -> None:
        assert state in STATES, state
        self.state = state
        self.notify("state")

    @property
    def running(self) -> bool:
        return self.state in ("running", "cancelling")

    # -- progress ----------------------------------------------------------------------------------------------
    def _reset_progress(self) -> None:
        self._offset = 0
        self._records = 0
        self.done, self.total, self.stage, self.message = 0.0, 0.0, "", ""
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        """Metric name → (x, value) over the run's progress records (x: see :attr:`x_label`)."""
        self.x_label = PROGRESS_X_LABEL
        """What the curves' x is: ``step`` when the lab reports one, else its progress count."""

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, self.done / self.total)) if self.total else 0.0

    def poll(self) -> bool:
        """Read new progress records; True (and ``progress`` notified) when there were any."""
        if self.run_dir is None:
            return False
        records, self._offset = read_progress(self.run_dir, self._offset)
        if not records:
            return False
        for record in records:
            self._records += 1
            done, total = record.get("done"), record.get("total")
            if isinstance(done, (int, float)) and isinstance(total, (int, float)):
                self.done, self.total = float(done), float(total)
            self.stage, self.message = str(record.get("stage", "")), str(record.get("message", ""))
            metrics = record.get("metrics") or {}
            # a lab may give the record's x itself (a training step): then it is the x, not a curve
            step = metrics.get(STEP_METRIC)
            if isinstance(step, (int, float)) and not isinstance(step, bool):
                x, self.x_label = float(step), "step"
            else:  # the run's own progress count (optimizer steps, seeds, responses...): never a record number
                x = self.done if isinstance(done, (int, float)) else float(self._records)
            for name, value in metrics.items():
                if name != STEP_METRIC and isinstance(value, (int, float)) and not isinstance(value, bool):
                    xs, ys = self.series.setdefault(name, ([], []))
                    xs.append(x)
                    ys.append(float(value))
        self.notify("progress")
        return True

    def curve_groups(self) -> dict[str, list[str]]:
        """Metrics grouped for one plot each: ``"<group>: <curve>"`` names by group, then every
        ``*accuracy*`` together, every ``*loss*``, others alone."""
        groups: dict[str, list[str]] = {}
        for name in self.series:
            group, sep, _ = name.partition(": ")
            key = group if sep else "accuracy" if "acc" in name else "loss" if "loss" in name else name
            groups.setdefault(key, []).append(name)
        return groups

    # -- the report ----------------------------------------------------------------------------------------------
    def load_report(self) -> None:
        """Read the run folder's report (``report.md`` or ``summary.md``) and list its ``plots/*.png``."""
        if self.run_dir is None:
            return
        spec = EXPERIMENTS.get(self.run_experiment)
        names = [spec.report] if spec else []
        names += [n for n in ("report.md", "summary.md") if n not in names]
        self.report_text, self.report_path = "", None
        for name in names:
            path = self.run_dir / name
            if path.is_file():
                try:
                    self.report_text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    if self.session is not None:
                        self.session.error(f"{path}: cannot read the report ({exc})")
                    continue
                self.report_path = path
                break
        plots = self.run_dir / "plots"
        self.plots = sorted(plots.glob("*.png")) if plots.is_dir() else []
        self.notify("report")


__all__ = ["EXPERIMENTS", "LabExperiment", "LabInputError", "LabModel", "default_out", "lab_program"]
