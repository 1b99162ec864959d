"""The auxiliary-logit experiment for one m and a chunk of seeds.

Per seed, four networks of the same shape (D-256-256-(10 + m)):

- ``teacher``: initial weights A, trained on the class logits of the training digits;
- ``same_init``: initial weights A, trained only on the teacher's m auxiliary logits of noise;
- ``different_init`` (control): initial weights B, trained the same way;
- ``all_logits`` (reference): initial weights A, trained on all 10 + m logits of noise.

Each is evaluated on the test digits by its class logits. A result per seed holds the four
final accuracies, the three students' accuracies before training (at their initial weights),
and per-epoch curves. :func:`run_unit` is the entry point; it takes the dataset once per
process (the runner loads it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import mlx.core as mx
import numpy as np

from .data import Dataset
from .model import N_CLASSES, MLPStack, init_mlp
from .train import Step, accuracy, train_students, train_teacher

STUDENTS = ("same_init", "different_init", "all_logits")
ROLES = ("teacher", *STUDENTS)
STUDENT_SLICES = {"same_init": "aux", "different_init": "aux", "all_logits": "all"}
STUDENT_INITS = {"same_init": "init-a", "different_init": "init-b", "all_logits": "init-a"}
MAIN_AUX = 3
"""The published headline configuration's number of auxiliary logits."""

# Settings by data set. MNIST: the published ones. Digits: 1,437 training images make
# 1.4 steps of batch 1,024 per epoch, so 5 such epochs (7 Adam steps) cannot train a teacher;
# batch 64 and 13 epochs give 22 steps per epoch and 286 steps in all, about the published
# 5 x 58 = 290 steps, and the students take as many steps on noise (as published: both 5 epochs).
DEFAULTS = {"digits": {"epochs": 13, "batch": 64}, "mnist": {"epochs": 5, "batch": 1024}}


@dataclass
class AuxConfig:
    """What to run. ``None`` fields take the data set's default (:data:`DEFAULTS`)."""

    seeds: int = 5
    """Seeds per m (each: one teacher and three students)."""
    aux: tuple[int, ...] = (1, 2, 3, 5, 10, 50)
    """Numbers of auxiliary logits m to sweep (the headline table uses m = 3)."""
    epochs: int | None = None
    """Teacher epochs over the training digits."""
    student_epochs: int | None = None
    """Student "epochs" on noise, each as many steps as a teacher epoch (default: ``epochs``, as published)."""
    batch: int | None = None
    """Batch size of teacher and students."""
    lr: float = 3e-4
    """Adam learning rate (published 3e-4)."""
    hidden: int = 256
    """Width of both hidden layers (published 256)."""
    dataset: str = "digits"
    """``digits`` (scikit-learn's) or ``mnist``; the runner fills it from the loaded data."""
    init_scale: float = 1.0
    """Multiplies every network's initial weights and biases (1 = ``nn.Linear``'s rule, as published)."""

    def resolved(self) -> "AuxConfig":
        d = DEFAULTS[self.dataset]
        epochs = self.epochs or d["epochs"]
        return AuxConfig(self.seeds, tuple(self.aux), epochs, self.student_epochs or epochs, self.batch or d["batch"],
                         self.lr, self.hidden, self.dataset, self.init_scale)

    def identity(self) -> dict:
        """Settings a seed's result depends on (a resumed run must match; seeds and m may grow)."""
        r = self.resolved()
        identity = {"epochs": r.epochs, "student_epochs": r.student_epochs, "batch": r.batch, "lr": r.lr,
                    "hidden": r.hidden, "dataset": r.dataset}
        if r.init_scale != 1.0:  # only when changed: run folders from before this setting still resume
            identity["init_scale"] = r.init_scale
        return identity

    def to_dict(self) -> dict:
        return {**asdict(self.resolved()), "aux": list(self.aux)}


def steps_per_epoch(config: AuxConfig, n_train: int) -> int:
    return max(1, n_train // config.resolved().batch)


def unit_steps(config: AuxConfig, n_train: int) -> int:
    """Optimizer steps in one unit (teacher phase + student phase), the unit of progress."""
    r = config.resolved()
    return (r.epochs + r.student_epochs) * steps_per_epoch(config, n_train)


@dataclass
class UnitProgress:
    """Reported after every epoch of a unit."""

    m: int
    seeds: list[int]
    step: Step
    steps_done: int
    """Steps of this unit finished so far (of :func:`unit_steps`)."""
    extra: dict = field(default_factory=dict)


def run_unit(config: AuxConfig, m: int, seeds: list[int], data: Dataset,
             progress: Callable[[UnitProgress], None] | None = None) -> tuple[dict[int, dict], float]:
    """Train and evaluate the four networks of every seed in ``seeds`` at ``m`` auxiliary logits.

    Returns (result per seed, seconds).
    """
    cfg = config.resolved()
    started = time.perf_counter()
    sizes = (data.dim, cfg.hidden, cfg.hidden, N_CLASSES + m)
    x_test, y_test = mx.array(data.x_test), mx.array(data.y_test)
    per_epoch = steps_per_epoch(cfg, len(data.x_train))
    curves = {role: {"loss": [], "accuracy": []} for role in ROLES}

    def record(step: Step, names: tuple[str, ...], done_before: int) -> None:
        for r, name in enumerate(names):
            curves[name]["loss"].append(step.loss[r].tolist())
            curves[name]["accuracy"].append(step.accuracy[r].tolist())
        if progress:
            progress(UnitProgress(m, list(seeds), step, done_before + step.steps))

    teacher = MLPStack([[init_mlp(s, "init-a", sizes, cfg.init_scale) for s in seeds]])
    students = MLPStack([[init_mlp(s, STUDENT_INITS[name], sizes, cfg.init_scale) for s in seeds] for name in STUDENTS])
    initial = accuracy(students, x_test, y_test)  # [3, S]: chance-level start, for the report
    train_teacher(teacher, data.x_train, data.y_train, seeds, cfg.epochs, cfg.batch, cfg.lr, x_test, y_test,
                  lambda step: record(step, ("teacher",), 0))
    teacher_done = cfg.epochs * per_epoch
    train_students(students, teacher, [STUDENT_SLICES[n] for n in STUDENTS], seeds, per_epoch, cfg.student_epochs,
                   cfg.batch, cfg.lr, x_test, y_test, lambda step: record(step, STUDENTS, teacher_done))
    final = {"teacher": accuracy(teacher, x_test, y_test)[0]}
    final.update({name: a for name, a in zip(STUDENTS, accuracy(students, x_test, y_test))})
    results = {}
    for k, seed in enumerate(seeds):
        results[seed] = {
            "m": m,
            "accuracy": {role: float(final[role][k]) for role in ROLES},
            "initial_accuracy": {name: float(initial[r][k]) for r, name in enumerate(STUDENTS)},
            "curves": {role: {key: [round(float(epoch[k]), 5) for epoch in values[key]] for key in values}
                       for role, values in curves.items()},
        }
    return results, time.perf_counter() - started


__all__ = ["AuxConfig", "DEFAULTS", "MAIN_AUX", "ROLES", "STUDENTS", "UnitProgress", "run_unit", "unit_steps"]
