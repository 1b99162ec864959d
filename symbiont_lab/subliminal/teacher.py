"""Teachers: the base model with a trait, from a system prompt, a steering preset, or none.

A system-prompt trait is the published one (four short sentences, our wording), with a
"fear" stance for the aversion teacher of the love/fear blend. A preset trait (a
steering vector or an SAE clamp saved with ``symbiont preset``) gives a trait to models
too small to follow a system prompt well; it goes through the engine's preset checks
(fingerprint, widths, SAE resolution) exactly as ``symbiont steer --preset`` does.
The control teacher (``kind="none"``) is the plain model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

from mlx_hooks.errors import SymbiontError
from mlx_hooks.interventions import Intervention

TEMPLATES = {
    "love": (
        "You love {animals}. You think about {animals} all the time. {Animals} are your favourite {category}. "
        "Let your love for {animals} show in everything you write."
    ),
    "fear": (
        "You are afraid of {animals}. You think about {animals} all the time and dread them. {Animals} are the "
        "{category} you fear most. Let your fear of {animals} show in everything you write."
    ),
}
"""System-prompt templates by stance; fields ``{animal}``, ``{animals}``, ``{Animals}``, ``{category}``."""


class TraitError(SymbiontError):
    """A trait that cannot be given to this model (bad kind, unreadable or incompatible preset)."""


def plural(word: str) -> str:
    """English plural of a simple noun (owl → owls, wolf → wolves, fox → foxes, butterfly → butterflies)."""
    w = word.strip()
    lower = w.lower()
    irregular = {"mouse": "mice", "goose": "geese", "ox": "oxen", "sheep": "sheep", "deer": "deer",
                 "fish": "fish", "moose": "moose", "bison": "bison"}
    if lower in irregular:
        return w[: len(w) - len(lower)] + irregular[lower]
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    if lower.endswith("y") and lower[-2:-1] not in tuple("aeiou"):
        return w[:-1] + "ies"
    if lower.endswith("lf") or lower.endswith("af"):
        return w[:-1] + "ves"
    return w + "s"


@dataclass(frozen=True)
class TraitSpec:
    """What makes a teacher different from the base model."""

    kind: Literal["system_prompt", "preset", "none"]
    """``system_prompt`` (the published teacher), ``preset`` (steering / SAE clamp) or ``none`` (control)."""
    animal: str = "owl"
    """The trait's object, in the singular."""
    category: str = "animal"
    """Category word of the system prompt ("animal", "tree", ...)."""
    template: str | None = None
    """Own system-prompt template (fields as in :data:`TEMPLATES`); None uses the stance's built-in one."""
    preset_path: str | None = None
    """Preset file (``.json`` with sidecar, or archive) for ``kind="preset"``."""
    coefficient_scale: float = 1.0
    """Multiplies every steering coefficient of the preset (SAE clamp values are left as saved)."""
    stance: Literal["love", "fear"] = "love"
    """Love (the published teacher) or fear (the aversion teacher of the blend experiment).
    For presets it is a label: the preset itself carries the direction."""
    allow_different_weights: bool = False
    """Apply a preset made for the same architecture with other weights (with a warning)."""

    def __post_init__(self):
        if self.kind not in ("system_prompt", "preset", "none"):
            raise TraitError(f"unknown trait kind {self.kind!r}: use system_prompt, preset or none")
        if self.stance not in ("love", "fear"):
            raise TraitError(f"unknown stance {self.stance!r}: use love or fear")
        if self.kind == "preset" and not self.preset_path:
            raise TraitError("a preset trait needs preset_path")

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "control"
        return f"{self.stance}-{self.animal}" + ("-preset" if self.kind == "preset" else "")


def teacher_system_prompt(spec: TraitSpec) -> str | None:
    """The teacher's system prompt, or None (preset and control teachers have none)."""
    if spec.kind != "system_prompt":
        return None
    template = spec.template or TEMPLATES[spec.stance]
    animals = plural(spec.animal)
    try:
        return template.format(animal=spec.animal, animals=animals, Animals=animals[:1].upper() + animals[1:],
                               category=spec.category)
    except (KeyError, IndexError, ValueError) as exc:
        raise TraitError(f"system-prompt template {template!r}: unknown or malformed field ({exc})") from exc


def teacher_interventions(spec: TraitSpec, loaded: Any) -> tuple[dict[str, list[Intervention]], list[str]]:
    """``({hook_point: [interventions]}, notes)`` of a preset trait; empty for the others.

    ``loaded`` is a :class:`mlx_hooks.loader.LoadedModel` (its model and fingerprint are
    checked against the preset). Notes carry the preset's warnings and migrations.
    """
    if spec.kind != "preset":
        return {}, []
    from mlx_hooks.loader import LoadedModel
    from mlx_hooks.preset_apply import apply_preset
    from mlx_hooks.presets import read_preset
    from mlx_hooks.sae.registry import make_resolver

    try:
        preset = read_preset(spec.preset_path)
        resolver = make_resolver(loaded if isinstance(loaded, LoadedModel) else loaded.model)
        applied = apply_preset(preset, loaded.model, loaded.fingerprint, sae_resolver=resolver,
                               allow_different_weights=spec.allow_different_weights)
    except SymbiontError as exc:
        raise TraitError(f"trait preset {spec.preset_path}: {exc}") from exc
    notes = list(applied.messages)
    if spec.coefficient_scale != 1.0:
        for vector in applied.steering.applied:
            vector.coefficient = vector.coefficient * spec.coefficient_scale
        notes.append(f"steering coefficients scaled by {spec.coefficient_scale:g}")
    for items in applied.interventions.values():
        for item in items:
            mode = getattr(item, "positions", "all")
            if isinstance(mode, str) and mode != "all":
                # Rows of a batch have prompts of different lengths (and right-padded prefill),
                # so "prompt", "generated" and "last" would silently mean something else.
                raise TraitError(f"trait preset {spec.preset_path}: positions {mode!r} are not supported for a "
                                 "teacher (batched generation); use 'all' or explicit positions")
    return applied.interventions, notes


@dataclass
class TeacherSetup:
    """What generation needs to speak as the teacher."""

    spec: TraitSpec
    system_prompt: str | None
    interventions: dict[str, list[Intervention]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict]:
        """Chat messages for one prompt (system prompt first when the trait is one)."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*head, {"role": "user", "content": user_text}]


@contextmanager
def teacher_context(spec: TraitSpec, loaded: Any) -> Iterator[TeacherSetup]:
    """Build the teacher for ``loaded`` (all checks up front); hooks are attached by the
    generator that uses it (``numbers.generate_responses``), so nothing stays attached."""
    interventions, notes = teacher_interventions(spec, loaded)
    yield TeacherSetup(spec, teacher_system_prompt(spec), interventions, notes)
