"""What the lab panel says about each experiment before it runs, and how long the rest will take.

- :func:`describe` — the lab's own description (the first paragraph of its package's
  docstring, read from the source file without importing the lab: no MLX at panel start)
  and the duration measured so far (:data:`MEASURED`), or the estimate its title gives.
- :func:`shipped_configs` — the example run configurations shipped with the package (the
  subliminal lab's ``configs/*.toml``), each with its leading comment, so nobody has to
  browse into the installed package to find them.
- :class:`ProgressClock` — overall progress over wall time → elapsed and ETA.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

MEASURED: dict[str, str] = {
    "aux-logits": "4–8 min on the 8×8 digits (measured with the defaults, 5 seeds: 234 s and 459 s wall on 2 shared CPU cores); on MNIST (the default when online) longer, not measured here",
    "negation": "~7 min (measured at the published sizes on 2 CPU cores)",
    "subliminal": "depends on the configuration: ci_small 68 min (measured on 2 CPU cores shared with other jobs); "
                  "owl is the published size, hours on a 7B–32B model",
}
"""Durations measured on this project's machines (README and the configs' comments say where)."""


@dataclass(frozen=True)
class ExperimentInfo:
    description: str
    """What the experiment does, in the lab's own words (may be empty)."""
    duration: str
    """How long a run takes, measured or as the experiment's title estimates it; empty if unknown."""


@dataclass(frozen=True)
class ShippedConfig:
    name: str
    path: Path
    comment: str
    """The file's leading ``#`` comment lines, joined."""


def _package_docstring(package: str) -> str:
    try:
        spec = importlib.util.find_spec(f"symbiont_lab.{package}")
    except (ImportError, ValueError):
        return ""
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    try:
        return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""


def describe(experiment) -> ExperimentInfo:
    """``experiment`` is a :class:`~.lab.LabExperiment`."""
    package = {"subliminal": "subliminal"}.get(experiment.name, experiment.name.replace("-", "_"))
    paragraph = _package_docstring(package).split("\n\n")[0]
    description = " ".join(line.strip() for line in paragraph.splitlines()).strip()
    duration = MEASURED.get(experiment.name, "")
    if not duration:
        guess = re.search(r"\(([^()]*~[^()]*)\)", experiment.title)  # e.g. "(default config; ~1 h)"
        duration = f"{guess.group(1)} (the experiment's own estimate)" if guess else ""
    return ExperimentInfo(description, duration)


def shipped_configs() -> list[ShippedConfig]:
    """The shipped example configurations (empty if the subliminal lab is not installed)."""
    try:
        from symbiont_lab.subliminal.config import example_configs
    except ImportError:
        return []
    found = []
    for name, path in example_configs().items():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        comment = []
        for line in lines:
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        found.append(ShippedConfig(name, path, " ".join(comment)))
    return found


@dataclass
class ProgressClock:
    """Overall progress (0..1) against wall time since the run (or its resumption) started."""

    start_time: float = field(default_factory=time.monotonic)
    start_fraction: float | None = None
    """The fraction at the first reading (a resumed run starts part-way)."""
    fraction: float = 0.0
    now: float = field(default_factory=time.monotonic)

    def update(self, fraction: float, now: float | None = None) -> None:
        self.now = time.monotonic() if now is None else now
        if self.start_fraction is None:
            self.start_fraction = fraction
        self.fraction = fraction

    @property
    def elapsed(self) -> float:
        return max(0.0, self.now - self.start_time)

    def eta(self) -> float | None:
        """Seconds left at the rate since the start; None until progress has moved."""
        if self.start_fraction is None:
            return None
        moved = self.fraction - self.start_fraction
        if moved <= 0 or self.elapsed <= 0:
            return None
        return max(0.0, (1.0 - self.fraction) * self.elapsed / moved)

    def describe(self) -> str:
        eta = self.eta()
        left = "ETA after the first progress" if eta is None else f"about {format_duration(eta)} left"
        return f"{self.fraction:.0%} done, {format_duration(self.elapsed)} elapsed, {left}"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
