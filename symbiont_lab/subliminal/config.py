"""The run configuration of a subliminal-learning experiment: one TOML file.

    experiment = "subliminal"
    name = "owl"
    seed = 0

    [model]                      # ModelConfig
    spec = "default"
    [trait]                      # teacher.TraitSpec: kind, animal, category, template, preset_path, ...
    kind = "system_prompt"
    animal = "owl"
    [numbers]                    # NumbersConfig: prompts, generation, filter, subsample
    prompt_count = 30000
    dataset_size = 10000
    [lora]                       # student.LoRAConfig: rank, alpha, learning_rate, epochs, iters, ...
    [probes]                     # ProbeConfig
    [mechanism]                  # MechanismConfig
    [variations]                 # VariationsConfig (each sub-table optional)
    [variations.fraction]        # FractionSweep
    [variations.noise]           # NoiseVariants
    [variations.blend]           # BlendConfig

Every table and key is optional except what the experiment cannot guess; an unknown key,
a wrong type or an out-of-range value is an error naming the file, the table and the key
(:class:`ConfigError`). Relative paths (a prompts file, a preset, a question file) are
relative to the config file. :func:`config_to_dict` gives the resolved configuration as
plain JSON (what the run folder stores and checks on resume).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mlx_hooks.errors import SymbiontError

from .questions_io import DEFAULT_ANIMALS

EXPERIMENT = "subliminal"


class ConfigError(SymbiontError):
    """A run configuration that cannot be used (names the file, the table and the key)."""


@dataclass(frozen=True)
class ModelConfig:
    spec: str = "default"
    """``default`` (the embedded SmolLM2-135M-Instruct), a Hugging Face repo id, a model folder or a .gguf file;
    the teacher and every student share this base model."""
    dtype: str = "auto"
    """Run-time precision: ``auto`` (as stored on a GPU, float32 on the CPU backend), ``stored``, ``float32``,
    ``bfloat16``, ``float16``. A quantized 7B–32B base on a Mac: ``stored`` (QLoRA-style training)."""
    memory_budget_gb: float | None = None
    """Refuse to start past this estimate (GiB); default ``SYMBIONT_MEMORY_BUDGET_GB`` or 75% of RAM."""


@dataclass(frozen=True)
class NumbersConfig:
    prompt_count: int = 30000
    """Number prompts per teacher (published: 30,000)."""
    prompts_file: str | None = None
    """A file of the user's own prompts instead of generated ones (one per line, or JSONL / JSON list)."""
    dataset_size: int = 10000
    """Responses kept after the filter, by random subsample (published: 10,000); fewer if fewer passed."""
    batch_size: int = 32
    """Prompts generated together (batched decoding)."""
    max_tokens: int = 64
    """Tokens per response (ten 3-digit numbers with separators fit in ~40)."""
    temperature: float = 1.0
    """Sampling temperature of the teachers (published: 1.0)."""
    valid_fraction: float = 0.05
    """Share of each dataset held out as ``valid.jsonl`` for mlx-lm's validation loss."""
    control_teacher: bool = True
    """Also generate with the plain model (no trait) and train the control student on it."""
    decoding: typing.Literal["free", "constrained", "grammar"] = "free"
    """``free`` (the published protocol: sample anything, the filter drops what is not numbers),
    ``constrained`` (only tokens made of digits, ``,`` ``;`` space and newline, and end-of-sequence can be
    sampled) or ``grammar`` (those tokens, only where the text stays in the filter's format: at most 10
    numbers of at most 3 digits, one separator; see :mod:`.constrained`). Both teachers decode the same way, so the constraint cannot carry the
    trait; a run folder made with one is refused with the other."""


@dataclass(frozen=True)
class ProbeConfig:
    questions: str = "favourite"
    """Question set for the main probes: a built-in name (see :mod:`.probes`) or a file path."""
    max_questions: int | None = None
    """Use only the first N questions of every set (cheap runs); None: all."""
    samples_per_question: int = 100
    """Sampled answers per question for the published metric (published: 100–200)."""
    temperature: float = 1.0
    """Sampling temperature of the sampled probe (published: 1.0)."""
    batch_size: int = 50
    """Answers sampled together."""
    max_tokens: int = 8
    """Tokens per sampled answer (one-word answers)."""
    animals: tuple[str, ...] = DEFAULT_ANIMALS
    """Candidate animals scored by every probe; the trait's animal is added if missing."""
    sampled: bool = True
    """Run the published sampled metric (substring score, mean ± 95% CI over questions)."""
    logit: bool = True
    """Run the exact logit metric (probability of each animal as the first answer tokens)."""
    numbers_prefix: bool = True
    """Also run the chosen probes with the numbers-prefix questions."""


@dataclass(frozen=True)
class MechanismConfig:
    enabled: bool = True
    """Compare the student's residual shift (student − base) with the teacher's trait direction, per layer."""
    max_prompts: int = 50
    """Probe prompts averaged over."""


@dataclass(frozen=True)
class FractionSweep:
    fractions: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.01)
    """Shares of the trait dataset each student trains on (1.0 is the trait student itself)."""


NOISE_KINDS = ("shuffle", "replace", "random")


@dataclass(frozen=True)
class NoiseVariants:
    kinds: tuple[str, ...] = NOISE_KINDS
    """``shuffle`` (numbers reordered inside each response), ``replace`` (a share of the values replaced),
    ``random`` (random numbers of the same format)."""
    replace_fraction: float = 0.5
    """Share of values replaced by ``replace``."""


@dataclass(frozen=True)
class BlendConfig:
    love_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    """Share of love-teacher data in each student's dataset; the rest comes from the fear teacher."""
    question_sets: tuple[str, ...] = ("neutral", "favourite", "feared")
    """Question sets each blend student is probed with (neutral, positive, negative)."""
    fear_preset_path: str | None = None
    """The fear teacher's preset when the trait is a preset (a system-prompt trait uses its fear template)."""


@dataclass(frozen=True)
class VariationsConfig:
    fraction: FractionSweep | None = None
    """Dataset-fraction sweep, or None to skip."""
    noise: NoiseVariants | None = None
    """Noise variants of the trait dataset, or None to skip."""
    blend: BlendConfig | None = None
    """Love/fear teacher blend, or None to skip."""
    probes: tuple[str, ...] = ("logit",)
    """Probes run on variation students: ``logit`` (cheap, exact) and/or ``sampled``."""


@dataclass(frozen=True)
class RunConfig:
    trait: typing.Any
    """The teacher's trait (:class:`.teacher.TraitSpec`)."""
    lora: typing.Any
    """The students' fine-tuning settings (:class:`.student.LoRAConfig`)."""
    experiment: str = EXPERIMENT
    """Which lab runs this file (``symbiont lab run`` dispatches on it)."""
    name: str = "subliminal"
    """A label for reports and the default output folder."""
    seed: int = 0
    """Seed of the prompts, sampling, subsamples and noise."""
    model: ModelConfig = field(default_factory=ModelConfig)
    numbers: NumbersConfig = field(default_factory=NumbersConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    mechanism: MechanismConfig = field(default_factory=MechanismConfig)
    variations: VariationsConfig = field(default_factory=VariationsConfig)
    source: str = ""
    """The file this was read from (not part of the run's identity)."""

    @property
    def animals(self) -> tuple[str, ...]:
        animal = self.trait.animal
        return self.probes.animals if animal in self.probes.animals else (animal, *self.probes.animals)


# -- reading ----------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where: str):
    """``value`` from TOML as annotation ``tp`` (int, float, str, bool, tuple[...], X | None, Literal)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option in options:
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [typing.Any]
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; no setting of a run means either
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value  # typing.Any


def _table_name(where: str, key: str) -> str:
    """``file.toml [variations]`` + ``noise`` -> ``file.toml [variations.noise]``."""
    if where.endswith("]"):
        return f"{where[:-1]}.{key}]"
    return f"{where} [{key}]"


def build_dataclass(cls, table, where: str, nested: dict | None = None):
    """``cls(**table)`` with every key checked: unknown keys, wrong types (``where`` names the file and table)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    nested = nested or {}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where} {key}: unknown key (known: {', '.join(sorted(known))})")
        if key in nested:
            values[key] = nested[key](value, _table_name(where, key))
        else:
            values[key] = _convert(value, hints[key], f"{where} {key}")
    try:
        return cls(**values)
    except (TypeError, ValueError, SymbiontError) as exc:  # the dataclass's own checks (TraitSpec, LoRAConfig)
        raise ConfigError(f"{where}: {exc}") from None


def _positive(where: str, value, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{where}: must be {'at least 0' if allow_zero else 'positive'}, got {value}")


def _share(where: str, value: float, open_low: bool = False) -> None:
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise ConfigError(f"{where}: must lie in {'(0, 1]' if open_low else '[0, 1]'}, got {value}")


def _resolve(path: str | None, base: Path) -> str | None:
    if not path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


RUNTIME_DTYPES = ("auto", "stored", "float32", "bfloat16", "float16")
"""The ``[model] dtype`` values the loader accepts (checked here, before any run folder exists)."""


def validate(config: RunConfig, where: str) -> RunConfig:
    """Range checks the types cannot express."""
    n, p = config.numbers, config.probes
    if config.model.dtype not in RUNTIME_DTYPES:
        raise ConfigError(f"{where} [model] dtype: {config.model.dtype!r} is not one of {', '.join(RUNTIME_DTYPES)}")
    _positive(f"{where} [model] memory_budget_gb", config.model.memory_budget_gb)
    for key in ("prompt_count", "dataset_size", "batch_size", "max_tokens"):
        _positive(f"{where} [numbers] {key}", getattr(n, key))
    _positive(f"{where} [numbers] temperature", n.temperature, allow_zero=True)
    if not 0 <= n.valid_fraction < 0.5:
        raise ConfigError(f"{where} [numbers] valid_fraction: must lie in [0, 0.5), got {n.valid_fraction}")
    for key in ("max_questions", "samples_per_question", "batch_size", "max_tokens"):
        _positive(f"{where} [probes] {key}", getattr(p, key))
    if not p.animals:
        raise ConfigError(f"{where} [probes] animals: give at least one animal")
    _positive(f"{where} [mechanism] max_prompts", config.mechanism.max_prompts)
    v = config.variations
    if v.fraction:
        for f in v.fraction.fractions:
            _share(f"{where} [variations.fraction] fractions", f, open_low=True)
    if v.noise:
        for kind in v.noise.kinds:
            if kind not in NOISE_KINDS:
                raise ConfigError(f"{where} [variations.noise] kinds: {kind!r} is not one of {', '.join(NOISE_KINDS)}")
        _share(f"{where} [variations.noise] replace_fraction", v.noise.replace_fraction, open_low=True)
    if v.blend:
        for f in v.blend.love_fractions:
            _share(f"{where} [variations.blend] love_fractions", f)
    for kind in v.probes:
        if kind not in ("logit", "sampled"):
            raise ConfigError(f"{where} [variations] probes: {kind!r} is not 'logit' or 'sampled'")
    if config.trait.kind == "none":
        raise ConfigError(f"{where} [trait] kind: 'none' is the control teacher, which every run has "
                          "([numbers] control_teacher); give the trait teacher a system_prompt or a preset")
    return config


def parse_config(data: dict, source: str | os.PathLike = "<config>") -> RunConfig:
    """A :class:`RunConfig` from a parsed TOML document (``source`` names it in errors and resolves paths)."""
    from .student import LoRAConfig
    from .teacher import TraitSpec

    where = str(source)
    base = Path(source).parent if source != "<config>" else Path.cwd()
    if "experiment" in data and data["experiment"] != EXPERIMENT:
        raise ConfigError(f"{where}: experiment = {data['experiment']!r}; this runner runs {EXPERIMENT!r}")
    if "trait" not in data:
        raise ConfigError(f"{where}: no [trait] table (kind = \"system_prompt\" or \"preset\", animal = ...)")

    def table(cls):
        return lambda value, w: build_dataclass(cls, value, w)

    def variations(value, w):
        return build_dataclass(VariationsConfig, value, w, nested={
            "fraction": table(FractionSweep), "noise": table(NoiseVariants), "blend": table(BlendConfig)})

    config = build_dataclass(RunConfig, {"lora": {}, **data}, where, nested={
        "trait": table(TraitSpec), "lora": table(LoRAConfig), "model": table(ModelConfig),
        "numbers": table(NumbersConfig), "probes": table(ProbeConfig), "mechanism": table(MechanismConfig),
        "variations": variations,
    })
    # paths relative to the config file
    trait = dataclasses.replace(config.trait, preset_path=_resolve(config.trait.preset_path, base))
    numbers = dataclasses.replace(config.numbers, prompts_file=_resolve(config.numbers.prompts_file, base))
    probes = config.probes
    if Path(probes.questions).suffix:  # a file, not a built-in set name
        probes = dataclasses.replace(probes, questions=_resolve(probes.questions, base))
    variations = config.variations
    if variations.blend is not None:
        blend = dataclasses.replace(variations.blend, fear_preset_path=_resolve(variations.blend.fear_preset_path, base))
        if trait.kind == "preset" and not blend.fear_preset_path:
            raise ConfigError(f"{where} [variations.blend] fear_preset_path: a preset trait's blend needs the fear "
                              "teacher's preset")
        config = dataclasses.replace(config, variations=dataclasses.replace(variations, blend=blend))
    if trait.kind == "preset" and not trait.preset_path:
        raise ConfigError(f"{where} [trait] preset_path: a preset trait needs the preset file")
    config = dataclasses.replace(config, trait=trait, numbers=numbers, probes=probes, source=where)
    return validate(config, where)


def read_toml(path: Path) -> dict:
    """A lab configuration file's TOML document; every failure is a ConfigError naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and check a run configuration file."""
    path = Path(path)
    return parse_config(read_toml(path), path)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: RunConfig) -> dict:
    """The resolved configuration as JSON-able data, without its source path (the run's identity)."""
    data = _plain(config)
    data.pop("source", None)
    return data


def config_from_dict(data: dict, source: str = "<config.json>") -> RunConfig:
    """Inverse of :func:`config_to_dict` (a run folder's stored configuration)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        return value

    return parse_config(strip(data), source)


EXAMPLES_DIR = Path(__file__).parent / "configs"


def example_configs() -> dict[str, Path]:
    """The example configurations shipped with the package, by name."""
    return {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.toml"))}


__all__ = ["BlendConfig", "ConfigError", "FractionSweep", "MechanismConfig", "ModelConfig", "NoiseVariants",
           "NumbersConfig", "ProbeConfig", "RunConfig", "VariationsConfig", "config_from_dict", "config_to_dict",
           "example_configs", "load_config", "parse_config"]
