"""What a run configuration asks for: its teachers, students, probes — as names and plain data.

The plan is computed from the configuration alone (no model, no files), so the stage
list, the progress totals and the report's tables all agree on the same names:

- teachers: ``trait`` (the configured trait), ``control`` (no trait) and, for the blend,
  ``fear`` (the same trait with the fear stance, or the blend's fear preset);
- students: ``trait`` and ``control`` (the main comparison), ``fraction_<pct>``,
  ``noise_<kind>``, ``blend_love<pct>`` (``blend_love100`` is the trait student itself);
- probe targets: ``base`` and every student, each with the probe jobs it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import RunConfig


@dataclass(frozen=True)
class TeacherPlan:
    name: str
    """``trait``, ``control`` or ``fear``."""
    spec: object
    """The teacher's :class:`.teacher.TraitSpec`."""


@dataclass(frozen=True)
class StudentPlan:
    name: str
    """Folder and table name (``trait``, ``control``, ``fraction_50``, ``noise_shuffle``, ``blend_love75``)."""
    group: str
    """``main``, ``fraction``, ``noise`` or ``blend``."""
    teacher: str | None = None
    """The teacher whose filtered data it trains on directly (main students)."""
    fraction: float | None = None
    """Share of the trait dataset (fraction sweep)."""
    noise: str | None = None
    """Noise kind applied to the trait dataset."""
    love_fraction: float | None = None
    """Share of love-teacher data (blend)."""
    alias_of: str | None = None
    """Another student with exactly this dataset (not trained twice)."""

    @property
    def trained_name(self) -> str:
        return self.alias_of or self.name


@dataclass(frozen=True)
class ProbeJob:
    kind: str
    """``sampled`` or ``logit``."""
    questions: str
    """Question set name or file."""
    numbers_prefix: bool = False
    """The numbers-prefix variant of the questions."""

    @property
    def key(self) -> str:
        name = self.questions if "/" not in self.questions else "custom"
        return f"{self.kind}:{name}" + (":prefix" if self.numbers_prefix else "")


@dataclass
class Plan:
    teachers: list[TeacherPlan]
    students: list[StudentPlan]
    probes: dict[str, list[ProbeJob]] = field(default_factory=dict)
    """Probe jobs by target (``base`` or a trained student's name)."""
    variation_jobs: dict[str, list[ProbeJob]] = field(default_factory=dict)
    """The probe jobs a variation student is reported with, by student name."""
    mechanism: bool = True
    """Whether the run ends with the mechanism view."""

    def student(self, name: str) -> StudentPlan:
        return next(s for s in self.students if s.name == name)

    def trained(self) -> list[StudentPlan]:
        return [s for s in self.students if s.alias_of is None]

    def probe_targets(self) -> list[str]:
        return list(self.probes)

    def stage_names(self) -> list[str]:
        names = ["prompts", "memory"]
        for t in self.teachers:
            names += [f"generate_{t.name}", f"filter_{t.name}"]
        names += [f"dataset_{s.name}" for s in self.trained()]
        names += [f"train_{s.name}" for s in self.trained()]
        names += [f"probe_{target}" for target in self.probes]
        return names + (["mechanism"] if self.mechanism else [])


def _pct(value: float) -> str:
    text = f"{value * 100:g}"
    return text.replace(".", "p")


def make_plan(config: RunConfig) -> Plan:
    from .teacher import TraitSpec

    trait = config.trait
    teachers = [TeacherPlan("trait", trait)]
    if config.numbers.control_teacher:
        teachers.append(TeacherPlan("control", TraitSpec(kind="none", animal=trait.animal, category=trait.category)))
    v = config.variations
    if v.blend is not None and any(f < 1 for f in v.blend.love_fractions):
        if trait.kind == "preset":
            fear = dataclasses.replace(trait, preset_path=v.blend.fear_preset_path, stance="fear")
        else:
            fear = dataclasses.replace(trait, stance="fear", template=None)
        teachers.append(TeacherPlan("fear", fear))

    students = [StudentPlan("trait", "main", teacher="trait")]
    if config.numbers.control_teacher:
        students.append(StudentPlan("control", "main", teacher="control"))
    if v.fraction is not None:
        for f in v.fraction.fractions:
            students.append(StudentPlan(f"fraction_{_pct(f)}", "fraction", fraction=f,
                                        alias_of="trait" if f == 1.0 else None))
    if v.noise is not None:
        students += [StudentPlan(f"noise_{kind}", "noise", noise=kind) for kind in v.noise.kinds]
    if v.blend is not None:
        for f in v.blend.love_fractions:
            students.append(StudentPlan(f"blend_love{_pct(f)}", "blend", love_fraction=f,
                                        alias_of="trait" if f == 1.0 else None))

    p = config.probes
    main_kinds = [k for k in ("sampled", "logit") if getattr(p, k)]
    main = [ProbeJob(k, p.questions) for k in main_kinds]
    if p.numbers_prefix:
        main += [ProbeJob(k, p.questions, numbers_prefix=True) for k in main_kinds]
    variation_main = [ProbeJob(k, p.questions) for k in v.probes]
    blend_jobs = [ProbeJob(k, qs) for qs in (v.blend.question_sets if v.blend else ()) for k in v.probes]

    probes: dict[str, list[ProbeJob]] = {}

    def add(target: str, jobs: list[ProbeJob]) -> None:
        have = probes.setdefault(target, [])
        for job in jobs:
            if job not in have:
                have.append(job)

    for target in ("base", "control", "trait"):
        if target == "control" and not config.numbers.control_teacher:
            continue
        add(target, main + blend_jobs)
    variation_jobs = {}
    for s in students:
        if s.group == "main":
            continue
        variation_jobs[s.name] = variation_main + (blend_jobs if s.group == "blend" else [])
        add(s.trained_name, variation_jobs[s.name])
    return Plan(teachers, students, probes, variation_jobs, config.mechanism.enabled)


__all__ = ["Plan", "ProbeJob", "StudentPlan", "TeacherPlan", "make_plan"]
