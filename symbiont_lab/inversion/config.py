"""The run configuration of an inversion experiment: one TOML file (every table optional).

    experiment = "inversion"
    name = "default"
    seeds = 1
    [model]      # the subliminal lab's ModelConfig: spec, dtype, memory_budget_gb
    [tasks]      # TasksConfig
    [teachers]   # TeachersConfig
    [lora]       # the subliminal lab's LoRAConfig (teachers and students share it: the same budget)
    [students]   # StudentsConfig
    [analysis]   # AnalysisConfig

Read and checked with the subliminal lab's reader (unknown keys, wrong types and bad ranges are
:class:`ConfigError`\\ s naming the file, the table and the key).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..subliminal.config import RUNTIME_DTYPES, ConfigError, ModelConfig, _plain, build_dataclass, read_toml
from .tasks import FAMILIES

EXPERIMENT = "inversion"
TEACHERS = ("inverted-learned", "inverted-oracle", "wrong-random", "correct")
REGIMES = ("supervised", "zero-shot", "blind")


@dataclass(frozen=True)
class TasksConfig:
    families: tuple[str, ...] = FAMILIES
    """Task families (``next``, ``sort``, ``antonym``)."""
    train: int = 32
    """Prompts per family the teachers and the students train on."""
    fit: int = 12
    """Prompts per family for the decoders' fit and the steering layer's choice."""
    test: int = 30
    """Held-out prompts per family: every reported number (train + fit + test ≤ 116, the antonym list)."""
    next_offset: int = -2
    """The oracle teacher's answer to "what comes right after n": the right answer + this (−2: the number before)."""
    max_tokens: int = 12
    """Tokens per reply (the answers are one number, three numbers or one word; the base's chatty
    "The numbers are 2, 6, and 8." fits in 12)."""
    batch_size: int = 32
    """Replies generated together."""


@dataclass(frozen=True)
class TeachersConfig:
    kinds: tuple[str, ...] = TEACHERS
    """Teachers A to train (``inverted-learned``, ``inverted-oracle``, ``wrong-random``, ``correct``)."""
    learned_rounds: int = 2
    """Rounds of the learned inversion: each picks the current model's most confident wrong answer
    per training prompt, then trains a fresh LoRA on the base to give it."""
    learned_samples: int = 1
    """Sampled replies (temperature 1) per prompt besides the greedy one: the candidates of a round."""


@dataclass(frozen=True)
class StudentsConfig:
    regimes: tuple[str, ...] = REGIMES
    """Student regimes: ``supervised`` (A's output → right answer), ``zero-shot`` (the base asked what was
    meant), ``blind`` (trained on A's outputs alone, then negated)."""
    steer_layers: tuple[int, ...] = ()
    """Layers tried for steering with −(B − base); empty: four evenly spaced layers."""
    steer_scale: float = 1.0
    """Multiple of −(B − base) added at the chosen layer (1: exactly B's mean shift, reversed)."""


@dataclass(frozen=True)
class AnalysisConfig:
    permutations: int = 20000
    """Permutations of the mutual information's null and of the paired tests. The smallest p-value is
    1/(permutations + 1): with m tests it must stay below alpha/m (~65 tests: at least ~1300)."""
    bootstrap: int = 200
    """Bootstrap resamples of the mutual information's CI."""
    mechanism: bool = True
    """Residual-shift cosines (A − base vs B − base) and the logit-lens departure layer."""
    alpha: float = 0.05
    """Family-wise error rate (Bonferroni across the table)."""


@dataclass(frozen=True)
class InversionConfig:
    lora: Any
    """Fine-tuning settings of every teacher and student (:class:`..subliminal.student.LoRAConfig`)."""
    experiment: str = EXPERIMENT
    name: str = "inversion"
    """A label for reports and the default output folder."""
    seeds: int = 1
    """Repeats of the whole pipeline (LoRA initialisation, data order, random answers); tasks stay fixed."""
    task_seed: int = 0
    """Seed of the task prompts and their splits."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    students: StudentsConfig = field(default_factory=StudentsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    source: str = ""
    """The file this was read from (not part of the run's identity)."""


def _validate(c: InversionConfig, where: str) -> InversionConfig:
    def need(ok: bool, key: str, problem: str):
        if not ok:
            raise ConfigError(f"{where} {key}: {problem}")

    need(c.model.dtype in RUNTIME_DTYPES, "[model] dtype", f"{c.model.dtype!r} is not one of {', '.join(RUNTIME_DTYPES)}")
    need(c.seeds >= 1, "seeds", f"must be at least 1, got {c.seeds}")
    t = c.tasks
    need(bool(t.families) and all(f in FAMILIES for f in t.families), "[tasks] families",
         f"choose from {', '.join(FAMILIES)}, got {list(t.families)}")
    for key in ("train", "fit", "test", "max_tokens", "batch_size"):
        need(getattr(t, key) >= 2 if key in ("train", "fit", "test") else getattr(t, key) >= 1, f"[tasks] {key}",
             f"too small ({getattr(t, key)})")
    need(t.next_offset != 0, "[tasks] next_offset", "0 would make the oracle teacher the correct one")
    if "antonym" in t.families:
        need(t.train + t.fit + t.test <= 116, "[tasks]", "train + fit + test antonym prompts exceed the built-in 116")
    need(bool(c.teachers.kinds) and all(k in TEACHERS for k in c.teachers.kinds), "[teachers] kinds",
         f"choose from {', '.join(TEACHERS)}")
    need(c.teachers.learned_rounds >= 1 and c.teachers.learned_samples >= 0, "[teachers]",
         "learned_rounds must be at least 1 and learned_samples at least 0")
    need(all(r in REGIMES for r in c.students.regimes), "[students] regimes", f"choose from {', '.join(REGIMES)}")
    need(c.students.steer_scale > 0, "[students] steer_scale", "must be above 0")
    a = c.analysis
    need(a.permutations >= 1 and a.bootstrap >= 0, "[analysis]", "permutations >= 1, bootstrap >= 0")
    need(0 < a.alpha < 1, "[analysis] alpha", f"must lie in (0, 1), got {a.alpha}")
    need(c.lora.batch_size <= t.train * len(t.families), "[lora] batch_size", "larger than the training set")
    return c


def parse_config(data: dict, source: str | os.PathLike = "<config>") -> InversionConfig:
    from ..subliminal.student import LoRAConfig

    where = str(source)
    if data.get("experiment", EXPERIMENT) != EXPERIMENT:
        raise ConfigError(f"{where}: experiment = {data['experiment']!r}; this runner runs {EXPERIMENT!r}")

    def table(cls):
        return lambda value, w: build_dataclass(cls, value, w)

    config = build_dataclass(InversionConfig, {"lora": {}, **data}, where, nested={
        "lora": table(LoRAConfig), "model": table(ModelConfig), "tasks": table(TasksConfig),
        "teachers": table(TeachersConfig), "students": table(StudentsConfig), "analysis": table(AnalysisConfig)})
    return _validate(replace(config, source=where), where)


def load_config(path: str | os.PathLike | None = None) -> InversionConfig:
    """Read and check a configuration file (None: the shipped ``default.toml``)."""
    path = Path(path) if path else EXAMPLES_DIR / "default.toml"
    return parse_config(read_toml(path), path)


REPORT_ONLY = ("permutations", "bootstrap", "alpha")
"""``[analysis]`` keys only the report reads: not part of a run folder's identity, so changing them
re-renders a finished run instead of refusing its folder."""


def config_to_dict(config: InversionConfig) -> dict:
    """The settings the run's stage files depend on (the run folder's identity; no source path)."""
    data = _plain(config)
    data.pop("source", None)
    data["lora"] = config.lora.to_json()
    for key in REPORT_ONLY:
        data["analysis"].pop(key)
    return data


EXAMPLES_DIR = Path(__file__).parent / "configs"

__all__ = ["AnalysisConfig", "ConfigError", "EXAMPLES_DIR", "InversionConfig", "REGIMES", "StudentsConfig", "TEACHERS",
           "TasksConfig", "TeachersConfig", "config_to_dict", "load_config", "parse_config"]
