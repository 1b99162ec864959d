"""The three negation experiments, each run for a chunk of seeds as one vectorised model.

- ``sorted``: per seed a *baseline* (random negatives) and a *concept* (one-swap negatives)
  TinyLSTM with the same initial weights, the same positives and the same length per step;
  evaluated on easy / hard negatives at length 20 and hard negatives at length 40.
- ``collapse``: Gen0 learns the ground truth of a mix (default ½ sorted, ¼ random, ¼
  one-swap: balanced labels; the published text names the kinds, not the shares);
  Gen1 is a fresh model trained on fresh inputs of the same mix labelled by Gen0, Gen2 on
  inputs labelled by Gen1. Variants: ``hard`` (0/1 labels, the published chain), ``soft``
  (Gen N−1's probabilities: distillation), ``mix<x>`` (a fraction x of each batch keeps its
  ground-truth label, the rest hard labels from the previous generation; the ground-truth
  positions for a smaller x are a subset of those for a larger x).
- ``representation``: zig-zag and pivot tasks with standard, neighbour-difference and
  anchor-difference inputs; accuracy at length 40 every ``checkpoint_every`` steps, the
  best checkpoint as published ("best extrapolation acc") and the final one.

:func:`run_unit` is the entry point (also what worker processes run); it returns one
result dict per seed. Everything a seed sees (initial weights, data, label masks) comes
from streams named by experiment, seed and purpose, so its result does not depend on the
chunk it ran in (``tests/test_negation_lab.py`` checks this).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import mlx.core as mx
import numpy as np

from . import tasks
from .models import SeedBatch, init_params

EXPERIMENTS = ("sorted", "collapse", "representation")
SORTED_VARIANTS = ("baseline", "concept")
REPRESENTATION_TASKS = ("zigzag", "pivot")
EVAL_LENGTH = 20
EXTRAPOLATION_LENGTH = 40
TRAIN_EVAL_LENGTH = 12

Progress = Callable[[str], None]


@dataclass
class NegationConfig:
    """What to run. Defaults are the published sizes and settings."""

    seeds: int = 20
    """Seeds of the sorted-task and collapse experiments."""
    steps: int = 1600
    """Training steps of each sorted-task and collapse model."""
    representation_seeds: int = 10
    """Seeds of the input-representation experiment (published: 10)."""
    representation_steps: int = 2000
    """Training steps in the input-representation experiment (published: 2,000)."""
    batch: int = 32
    vocab: int = tasks.VOCAB
    train_lengths: tuple[int, int] = tasks.TRAIN_LENGTHS
    eval_per_class: int = 500
    """Sequences per component in each evaluation set (e.g. 500 sorted + 500 one-swap)."""
    mix_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    """Ground-truth shares of the "mix" collapse variants."""
    collapse_mix: tuple[tuple[str, float], ...] = tasks.MIXTURES["collapse"]
    """What each collapse generation's inputs are made of (the published text does not give the shares)."""
    soft_temperatures: tuple[float, ...] = ()
    """Extra soft-label collapse variants: Gen N−1's P(positive) as ``sigmoid(logit / T)`` (T < 1
    sharper, toward hard labels; T > 1 flatter). The plain ``soft`` variant is T = 1."""
    checkpoint_every: int = 400
    """Representation experiment: evaluate at length 40 every this many steps."""
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self):
        self.train_lengths = tuple(self.train_lengths)
        self.mix_fractions = tuple(float(x) for x in self.mix_fractions)
        self.soft_temperatures = tuple(dict.fromkeys(float(t) for t in self.soft_temperatures if float(t) != 1.0))
        for t in self.soft_temperatures:
            if not 0.0 < t <= 100.0:
                raise ValueError(f"soft-label temperatures must lie in (0, 100], got {t}")
        self.collapse_mix = tasks.mixture_parts(tuple(tuple(p) for p in self.collapse_mix))
        for name, _ in self.collapse_mix:
            if name not in ("sorted", "random", "one_swap"):
                raise ValueError(f"the collapse mix takes sorted, random and one_swap sequences, not {name!r}")
        self.experiments = tuple(self.experiments)
        for name in self.experiments:
            if name not in EXPERIMENTS:
                raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        for x in self.mix_fractions:
            if not 0.0 < x < 1.0:
                raise ValueError(f"mix fractions are shares of ground truth strictly between 0 and 1, got {x}")
        for name in ("seeds", "steps", "representation_seeds", "representation_steps", "batch", "eval_per_class",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_lengths[0] < 3 or self.train_lengths[1] < self.train_lengths[0]:
            raise ValueError(f"train_lengths must be (lo, hi) with 3 <= lo <= hi, got {self.train_lengths}")

    def seeds_of(self, experiment: str) -> int:
        return self.representation_seeds if experiment == "representation" else self.seeds

    def steps_of(self, experiment: str) -> int:
        return self.representation_steps if experiment == "representation" else self.steps

    def identity(self) -> dict:
        """The settings a run folder's results depend on (not the seed counts or the selection)."""
        d = asdict(self)
        for key in ("seeds", "representation_seeds", "experiments"):
            d.pop(key)
        d["train_lengths"] = list(self.train_lengths)
        d["mix_fractions"] = list(self.mix_fractions)
        if self.soft_temperatures:
            d["soft_temperatures"] = list(self.soft_temperatures)
        else:  # absent unless used: run folders from before this setting still resume
            d.pop("soft_temperatures")
        d["collapse_mix"] = [[name, share] for name, share in self.collapse_mix]
        return d

    def collapse_variants(self) -> list[str]:
        return (["hard", "soft"] + [soft_name(t) for t in self.soft_temperatures]
                + [mix_name(x) for x in self.mix_fractions])


def mix_name(fraction: float) -> str:
    return f"mix{round(fraction * 100):g}"


def soft_name(temperature: float) -> str:
    return f"softT{temperature:g}"


def soft_labels(p: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``: the previous generation's probabilities at temperature T."""
    if temperature == 1.0:
        return p.astype(np.float32)
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return (1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))).astype(np.float32)


def unit_cost(config: NegationConfig, experiment: str, n_seeds: int) -> float:
    """Relative cost of a unit (seed-steps, labelling passes counted at a third)."""
    models = {"sorted": 2, "collapse": 1 + 2 * len(config.collapse_variants()) + (1 + len(config.collapse_variants())) / 3,
              "representation": 6 * 1.15}[experiment]
    return models * n_seeds * config.steps_of(experiment)


# -- shared pieces ---------------------------------------------------------------------------------
@dataclass
class Stacked:
    """Training data of M members sharing one length schedule, as MLX arrays per length."""

    lengths: np.ndarray
    index: np.ndarray
    tokens: dict[int, mx.array]   # [M, n_L, B, L] int32
    targets: dict[int, mx.array]  # [M, n_L, B] float32


def stack_members(lengths: np.ndarray, index: np.ndarray, tokens: list[dict], targets: list[dict]) -> Stacked:
    groups = tokens[0].keys()
    return Stacked(
        lengths, index,
        {L: mx.array(np.stack([t[L] for t in tokens]).astype(np.int32)) for L in groups},
        {L: mx.array(np.stack([t[L] for t in targets]).astype(np.float32)) for L in groups},
    )


def train(model: SeedBatch, data: Stacked, progress: Progress | None = None, label: str = "",
          every: int = 0, on_checkpoint: Callable[[int], None] | None = None) -> np.ndarray:
    """Train every member for ``len(data.lengths)`` steps; returns the last step's losses [M]."""
    steps = len(data.lengths)
    loss = None
    started = time.perf_counter()
    for s in range(steps):
        length, j = int(data.lengths[s]), int(data.index[s])
        loss = model.step(data.tokens[length][:, j], data.targets[length][:, j])
        if every and on_checkpoint and ((s + 1) % every == 0 or s + 1 == steps):
            on_checkpoint(s + 1)
        if progress and ((s + 1) % 400 == 0 or s + 1 == steps):
            progress(f"{label}: step {s + 1}/{steps} ({time.perf_counter() - started:.0f} s)")
    return np.array(loss) if loss is not None else np.zeros(model.size, np.float32)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per member: share of correct 0.5-threshold predictions ([M, N] vs [N] or [M, N])."""
    return ((probs > 0.5) == (labels > 0.5)).mean(axis=-1)


def sorted_eval_sets(config: NegationConfig, experiment: str) -> dict[str, tasks.EvalSet]:
    """Positives and negatives at length 20 and 40, fixed per experiment (the same for every seed)."""
    n = config.eval_per_class
    stream = (experiment, "eval")
    return {
        "pos20": tasks.eval_set("pos20", (("sorted", n),), EVAL_LENGTH, stream, config.vocab),
        "random20": tasks.eval_set("random20", (("random", n),), EVAL_LENGTH, stream, config.vocab),
        "one_swap20": tasks.eval_set("one_swap20", (("one_swap", n),), EVAL_LENGTH, stream, config.vocab),
        "pos40": tasks.eval_set("pos40", (("sorted", n),), EXTRAPOLATION_LENGTH, stream, config.vocab),
        "one_swap40": tasks.eval_set("one_swap40", (("one_swap", n),), EXTRAPOLATION_LENGTH, stream, config.vocab),
    }


def evaluate_sorted(model: SeedBatch, sets: dict[str, tasks.EvalSet]) -> list[dict]:
    """Per member: easy (L=20, random negatives), hard (L=20, one-swap), extrapolation (L=40, one-swap), in %."""
    part = {name: accuracy(model.probabilities(s.x), s.labels) for name, s in sets.items()}
    out = []
    for k in range(model.size):
        p = {name: float(v[k]) for name, v in part.items()}
        out.append({
            "easy": 50.0 * (p["pos20"] + p["random20"]),
            "hard": 50.0 * (p["pos20"] + p["one_swap20"]),
            "extrapolation": 50.0 * (p["pos40"] + p["one_swap40"]),
            "parts": {name: 100.0 * v for name, v in p.items()},
        })
    return out


def _schedule(config: NegationConfig, experiment: str) -> np.ndarray:
    return tasks.length_schedule(config.steps_of(experiment), tasks.rng_for(experiment, "lengths"),
                                 config.train_lengths)


# -- sorted: baseline vs concept -------------------------------------------------------------------
def run_sorted(config: NegationConfig, seeds: list[int], progress: Progress | None = None) -> dict[int, dict]:
    schedule = _schedule(config, "sorted")
    members = [(seed, variant) for seed in seeds for variant in SORTED_VARIANTS]
    datas = [tasks.training_data(variant, schedule, config.batch, ("sorted", seed), config.vocab)
             for seed, variant in members]
    data = stack_members(schedule, datas[0].index, [{L: g[0] for L, g in d.groups.items()} for d in datas],
                         [d.labels() for d in datas])
    model = SeedBatch.from_trees([init_params(tasks.seed_int("sorted", seed, "init"), config.vocab)
                                  for seed, _ in members])
    losses = train(model, data, progress, f"sorted seeds {_span(seeds)}")
    scores = evaluate_sorted(model, sorted_eval_sets(config, "sorted"))
    results: dict[int, dict] = {seed: {} for seed in seeds}
    for k, (seed, variant) in enumerate(members):
        results[seed][variant] = {**scores[k], "final_loss": float(losses[k])}
    return results


# -- collapse chain --------------------------------------------------------------------------------
@dataclass
class Generation:
    """Training inputs of one generation for a chunk of seeds, with their ground truth."""

    data: list[tasks.StepData]                 # per seed
    truth: list[dict[int, np.ndarray]]         # per seed: [n_L, B] 0/1
    mix_rank: list[dict[int, np.ndarray]]      # per seed: [n_L, B] rank of each position in its batch's draw


def generation_inputs(config: NegationConfig, seeds: list[int], gen: int, schedule: np.ndarray) -> Generation:
    datas, truths, ranks = [], [], []
    for seed in seeds:
        d = tasks.training_data(config.collapse_mix, schedule, config.batch, ("collapse", seed, f"gen{gen}"),
                                config.vocab)
        datas.append(d)
        truths.append(d.labels())
        rng = tasks.rng_for("collapse", seed, f"gen{gen}", "mix")
        ranks.append({L: np.argsort(np.argsort(rng.random(d.groups[L][1].shape), axis=1), axis=1)
                      for L in sorted(d.groups)})
    return Generation(datas, truths, ranks)


def chain_labels(variant: str, previous: dict[int, np.ndarray], truth: dict[int, np.ndarray],
                 mix_rank: dict[int, np.ndarray], batch: int) -> dict[int, np.ndarray]:
    """Training targets of a generation from the previous generation's P(positive) on its inputs.

    ``hard``: previous > 0.5; ``soft``: the probabilities; ``softT<T>``: the probabilities at
    temperature T (:func:`soft_labels`); ``mix<x>``: ground truth on the
    ``round(x·batch)`` positions of each batch with the lowest ``mix_rank``, hard labels elsewhere.
    """
    out = {}
    for L, p in previous.items():
        hard = (p > 0.5).astype(np.float32)
        if variant == "hard":
            out[L] = hard
        elif variant == "soft":
            out[L] = p.astype(np.float32)
        elif variant.startswith("softT"):
            out[L] = soft_labels(p, float(variant[5:]))
        elif variant.startswith("mix"):
            keep = int(round(float(variant[3:]) / 100.0 * batch))
            out[L] = np.where(mix_rank[L] < keep, truth[L], hard).astype(np.float32)
        else:
            raise ValueError(f"unknown collapse variant {variant!r}")
    return out


def predict_groups(model: SeedBatch, member_tokens: list[dict[int, np.ndarray]]) -> list[dict[int, np.ndarray]]:
    """P(positive) of each member on its own grouped inputs ({L: [n_L, B, L]})."""
    out = [dict() for _ in member_tokens]
    for L in member_tokens[0]:
        n, b = member_tokens[0][L].shape[:2]
        tokens = np.stack([t[L].reshape(n * b, L) for t in member_tokens])
        probs = model.probabilities(tokens)
        for k in range(len(member_tokens)):
            out[k][L] = probs[k].reshape(n, b)
    return out


@dataclass
class CollapseTrace:
    """What a chain did, kept for inspection and tests (``run_collapse(..., trace=...)``)."""

    seeds: list[int] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    models: dict[int, SeedBatch] = field(default_factory=dict)             # gen -> batch
    members: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # gen -> (seed, variant)
    inputs: dict[int, Generation] = field(default_factory=dict)
    targets: dict[int, list[dict[int, np.ndarray]]] = field(default_factory=dict)  # gen -> per member


def run_collapse(config: NegationConfig, seeds: list[int], progress: Progress | None = None,
                 trace: CollapseTrace | None = None) -> dict[int, dict]:
    schedule = _schedule(config, "collapse")
    variants = config.collapse_variants()
    sets = sorted_eval_sets(config, "collapse")
    results: dict[int, dict] = {seed: {"labels": {}} for seed in seeds}

    # Gen0: ground truth
    inputs0 = generation_inputs(config, seeds, 0, schedule)
    data0 = stack_members(schedule, inputs0.data[0].index, [{L: g[0] for L, g in d.groups.items()} for d in inputs0.data],
                          inputs0.truth)
    gen0 = SeedBatch.from_trees([init_params(tasks.seed_int("collapse", seed, "gen0"), config.vocab) for seed in seeds])
    train(gen0, data0, progress, f"collapse gen0 seeds {_span(seeds)}")
    for k, score in enumerate(evaluate_sorted(gen0, sets)):
        results[seeds[k]]["gen0"] = score
    if trace is not None:
        trace.seeds, trace.variants = list(seeds), list(variants)
        trace.models[0], trace.members[0], trace.inputs[0] = gen0, [(s, "truth") for s in seeds], inputs0
        trace.targets[0] = inputs0.truth

    previous, prev_members = gen0, [(seed, None) for seed in seeds]
    for gen in (1, 2):
        inputs = generation_inputs(config, seeds, gen, schedule)
        tokens_of_seed = {seed: {L: g[0] for L, g in inputs.data[i].groups.items()} for i, seed in enumerate(seeds)}
        probs = predict_groups(previous, [tokens_of_seed[seed] for seed, _ in prev_members])
        prob_of = {member: p for member, p in zip(prev_members, probs)}
        members = [(seed, variant) for seed in seeds for variant in variants]
        targets = []
        for seed, variant in members:
            i = seeds.index(seed)
            source = prob_of[(seed, None)] if gen == 1 else prob_of[(seed, variant)]
            labels = chain_labels(variant, source, inputs.truth[i], inputs.mix_rank[i], config.batch)
            targets.append(labels)
            wrong = np.concatenate([((labels[L] > 0.5) != (inputs.truth[i][L] > 0.5)).ravel() for L in labels])
            results[seed]["labels"].setdefault(variant, {})[f"gen{gen}_wrong"] = 100.0 * float(wrong.mean())
        data = stack_members(schedule, inputs.data[0].index, [tokens_of_seed[seed] for seed, _ in members], targets)
        model = SeedBatch.from_trees([init_params(tasks.seed_int("collapse", seed, f"gen{gen}"), config.vocab)
                                      for seed, _ in members])
        train(model, data, progress, f"collapse gen{gen} seeds {_span(seeds)} ({len(variants)} variants)")
        for k, score in enumerate(evaluate_sorted(model, sets)):
            seed, variant = members[k]
            results[seed].setdefault(variant, {})[f"gen{gen}"] = score
        if trace is not None:
            trace.models[gen], trace.members[gen], trace.inputs[gen] = model, members, inputs
            trace.targets[gen] = targets
        previous, prev_members = model, members
    return results


# -- input representations ------------------------------------------------------------------------
def representation_eval_sets(config: NegationConfig) -> dict[str, dict[str, tasks.EvalSet]]:
    n = config.eval_per_class
    out = {}
    for task in REPRESENTATION_TASKS:
        pos, neg = tasks.MIXTURES[task][0][0], tasks.MIXTURES[task][1][0]
        stream = ("representation", "eval", task)
        out[task] = {
            "extrapolation": tasks.eval_set("L40", ((pos, n), (neg, n)), EXTRAPOLATION_LENGTH, stream, config.vocab),
            "train_length": tasks.eval_set("L12", ((pos, n), (neg, n)), TRAIN_EVAL_LENGTH, stream, config.vocab),
        }
    return out


def run_representation(config: NegationConfig, seeds: list[int], progress: Progress | None = None) -> dict[int, dict]:
    schedule = _schedule(config, "representation")
    vocab = tasks.representation_vocab("anchor", config.vocab)  # one table size for all members
    members = [(seed, task, rep) for seed in seeds for task in REPRESENTATION_TASKS for rep in tasks.REPRESENTATIONS]
    data_of = {(seed, task): tasks.training_data(task, schedule, config.batch, ("representation", task, seed), config.vocab)
               for seed in seeds for task in REPRESENTATION_TASKS}
    tokens, targets = [], []
    for seed, task, rep in members:
        d = data_of[(seed, task)]
        tokens.append({L: tasks.represent(g[0], rep, config.vocab) for L, g in d.groups.items()})
        targets.append(d.labels())
    data = stack_members(schedule, data_of[(seeds[0], REPRESENTATION_TASKS[0])].index, tokens, targets)
    model = SeedBatch.from_trees([init_params(tasks.seed_int("representation", task, seed), vocab)
                                  for seed, task, _ in members])
    sets = representation_eval_sets(config)

    def member_tokens(which: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([tasks.represent(sets[task][which].x, rep, config.vocab) for _, task, rep in members])
        y = np.stack([sets[task][which].labels for _, task, _ in members])
        return x, y

    x40, y40 = member_tokens("extrapolation")
    curve: list[tuple[int, np.ndarray]] = []
    train(model, data, progress, f"representation seeds {_span(seeds)}", every=config.checkpoint_every,
          on_checkpoint=lambda step: curve.append((step, 100.0 * accuracy(model.probabilities(x40), y40))))
    x12, y12 = member_tokens("train_length")
    train_acc = 100.0 * accuracy(model.probabilities(x12), y12)
    results: dict[int, dict] = {seed: {} for seed in seeds}
    for k, (seed, task, rep) in enumerate(members):
        accs = [float(a[k]) for _, a in curve]
        results[seed].setdefault(task, {})[rep] = {
            "best_extrapolation": max(accs), "final_extrapolation": accs[-1],
            "checkpoints": [step for step, _ in curve], "extrapolation_curve": accs,
            "train_length": float(train_acc[k]),
        }
    return results


RUNNERS = {"sorted": run_sorted, "collapse": run_collapse, "representation": run_representation}


def run_unit(config: NegationConfig | dict, experiment: str, seeds: list[int], progress: Progress | None = None
             ) -> tuple[dict[int, dict], float]:
    """Run ``experiment`` for ``seeds`` as one vectorised batch; returns (results per seed, seconds)."""
    if isinstance(config, dict):
        config = NegationConfig(**config)
    started = time.perf_counter()
    results = RUNNERS[experiment](config, list(seeds), progress)
    return results, time.perf_counter() - started


def _span(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
