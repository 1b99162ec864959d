"""Data for the negation experiments: sequences, their negatives, input representations.

Everything is numpy and vectorised over sequences; every draw comes from a
``numpy.random.Generator`` made by :func:`rng_for` from named parts (experiment, seed,
stream), so a seed's data never depends on which other seeds run beside it.

Tasks (integers in ``[0, vocab)``, vocab 50 as published):

- **sorted**: positives are non-decreasing sequences (``sort`` of uniform draws); *random*
  negatives are uniform sequences that are not sorted; *one-swap* ("hard") negatives are a
  sorted sequence with one adjacent strictly increasing pair swapped.
- **zig-zag**: positives strictly alternate up/down (first direction random); a negative
  has exactly one place where two consecutive steps go the same way (a phase slip), every
  step still strict. Values are drawn step by step, uniform over what the direction allows.
- **pivot**: positives have every later item ``>=`` the first (first in ``[1, vocab)``);
  a negative has exactly one later item below the first.

Input representations (what the LSTM's embedding reads at step t):
``standard`` x_t; ``neighbour`` x_t − x_{t−1} (0 at t = 0); ``anchor`` x_t − x_0. Differences
are shifted by ``vocab − 1`` to be token ids in ``[0, 2·vocab − 1)``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

VOCAB = 50
"""Integers per position, as published."""
TRAIN_LENGTHS = (6, 12)
"""Training sequence lengths, inclusive, as published (one length per batch)."""
REPRESENTATIONS = ("standard", "neighbour", "anchor")


# -- random streams ------------------------------------------------------------------------------
def _part(value) -> int:
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"seed parts must be non-negative, got {value}")
        return int(value)
    return zlib.crc32(str(value).encode("utf-8"))


def rng_for(*parts) -> np.random.Generator:
    """A generator determined only by ``parts`` (strings and non-negative ints)."""
    return np.random.default_rng(np.random.SeedSequence([_part(p) for p in parts]))


def seed_int(*parts) -> int:
    """A 32-bit integer determined only by ``parts`` (for ``mx.random.key``)."""
    return int(np.random.SeedSequence([_part(p) for p in parts]).generate_state(1, dtype=np.uint32)[0])


# -- checks ----------------------------------------------------------------------------------------
def is_sorted(x: np.ndarray) -> np.ndarray:
    """Row-wise: non-decreasing."""
    return np.all(x[:, 1:] >= x[:, :-1], axis=1)


def is_zigzag(x: np.ndarray) -> np.ndarray:
    """Row-wise: every step strict and consecutive steps in opposite directions."""
    d = np.sign(np.diff(x.astype(np.int64), axis=1))
    return np.all(d != 0, axis=1) & np.all(d[:, 1:] == -d[:, :-1], axis=1)


def is_pivot(x: np.ndarray) -> np.ndarray:
    """Row-wise: every later item >= the first."""
    return np.all(x[:, 1:] >= x[:, :1], axis=1)


# -- sorted task -----------------------------------------------------------------------------------
def sorted_positives(rng: np.random.Generator, n: int, length: int, vocab: int = VOCAB) -> np.ndarray:
    return np.sort(rng.integers(0, vocab, (n, length)), axis=1)


def random_negatives(rng: np.random.Generator, n: int, length: int, vocab: int = VOCAB) -> np.ndarray:
    """Uniform sequences, redrawn while sorted (so every one is a true negative)."""
    x = rng.integers(0, vocab, (n, length))
    bad = is_sorted(x)
    while bad.any():
        x[bad] = rng.integers(0, vocab, (int(bad.sum()), length))
        bad = is_sorted(x)
    return x


def one_swap_negatives(rng: np.random.Generator, n: int, length: int, vocab: int = VOCAB) -> np.ndarray:
    """A sorted sequence with one adjacent pair (x_i < x_{i+1}, chosen uniformly) swapped."""
    x = sorted_positives(rng, n, length, vocab)
    strict = x[:, 1:] > x[:, :-1]
    flat = ~strict.any(axis=1)
    while flat.any():  # all-equal rows have nothing to swap
        x[flat] = sorted_positives(rng, int(flat.sum()), length, vocab)
        strict = x[:, 1:] > x[:, :-1]
        flat = ~strict.any(axis=1)
    score = np.where(strict, rng.random(strict.shape), -1.0)
    i = np.argmax(score, axis=1)
    rows = np.arange(n)
    x[rows, i], x[rows, i + 1] = x[rows, i + 1], x[rows, i].copy()
    return x


# -- zig-zag task ----------------------------------------------------------------------------------
def _values_for_signs(rng: np.random.Generator, signs: np.ndarray, vocab: int) -> np.ndarray:
    """Sequences whose step directions are ``signs`` ([n, L-1] of ±1), redrawn where stuck."""
    n, steps = signs.shape
    x = np.empty((n, steps + 1), dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        s = signs[todo]
        v = rng.integers(0, vocab, todo.size)
        cols = [v]
        ok = np.ones(todo.size, dtype=bool)
        for k in range(steps):
            up = s[:, k] > 0
            ok &= np.where(up, v < vocab - 1, v > 0)
            low = np.where(up, v + 1, 0)
            high = np.where(up, vocab, v)
            v = rng.integers(low, np.maximum(high, low + 1))  # dummy range where stuck; row redrawn
            cols.append(v)
        x[todo] = np.stack(cols, axis=1)
        todo = todo[~ok]
    return x


def zigzag_sequences(rng: np.random.Generator, n: int, length: int, negative: bool, vocab: int = VOCAB) -> np.ndarray:
    """Strictly alternating sequences, or (``negative``) ones with exactly one phase slip."""
    first = np.where(rng.random(n) < 0.5, 1, -1)
    k = np.arange(length - 1)
    phase = np.broadcast_to(k, (n, length - 1)).copy()
    if negative:
        if length < 3:
            raise ValueError("a zig-zag negative needs length >= 3")
        slip = rng.integers(1, length - 1, n)  # steps slip-1 and slip go the same way
        phase = phase - (k[None, :] >= slip[:, None])
    signs = first[:, None] * np.where(phase % 2 == 0, 1, -1)
    return _values_for_signs(rng, signs, vocab)


# -- pivot task ------------------------------------------------------------------------------------
def pivot_sequences(rng: np.random.Generator, n: int, length: int, negative: bool, vocab: int = VOCAB) -> np.ndarray:
    """First item in [1, vocab), later items >= it; a negative has one later item below it."""
    first = rng.integers(1, vocab, n)
    rest = rng.integers(first[:, None], vocab, (n, length - 1))
    x = np.concatenate([first[:, None], rest], axis=1)
    if negative:
        j = rng.integers(1, length, n)
        x[np.arange(n), j] = rng.integers(0, first)
    return x


# -- representations -------------------------------------------------------------------------------
def representation_vocab(kind: str, vocab: int = VOCAB) -> int:
    _check_representation(kind)
    return vocab if kind == "standard" else 2 * vocab - 1


def represent(x: np.ndarray, kind: str, vocab: int = VOCAB) -> np.ndarray:
    """Token ids the model reads for sequences ``x`` ([..., L]) under representation ``kind``."""
    _check_representation(kind)
    x = np.asarray(x)
    if kind == "standard":
        return x
    x = x.astype(np.int64)
    if kind == "neighbour":
        d = np.diff(x, axis=-1, prepend=x[..., :1])
    else:
        d = x - x[..., :1]
    return d + (vocab - 1)


def _check_representation(kind: str) -> None:
    if kind not in REPRESENTATIONS:
        raise ValueError(f"unknown input representation {kind!r}; choose from {', '.join(REPRESENTATIONS)}")


# -- components and mixtures -----------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One kind of sequence in a batch, with its ground-truth label."""

    name: str
    label: int

    def sample(self, rng: np.random.Generator, n: int, length: int, vocab: int = VOCAB) -> np.ndarray:
        return GENERATORS[self.name](rng, n, length, vocab)


GENERATORS = {
    "sorted": sorted_positives,
    "random": random_negatives,
    "one_swap": one_swap_negatives,
    "zigzag": lambda rng, n, length, vocab: zigzag_sequences(rng, n, length, False, vocab),
    "zigzag_slip": lambda rng, n, length, vocab: zigzag_sequences(rng, n, length, True, vocab),
    "pivot": lambda rng, n, length, vocab: pivot_sequences(rng, n, length, False, vocab),
    "pivot_break": lambda rng, n, length, vocab: pivot_sequences(rng, n, length, True, vocab),
}
COMPONENTS = {
    name: Component(name, label)
    for name, label in [("sorted", 1), ("random", 0), ("one_swap", 0), ("zigzag", 1), ("zigzag_slip", 0),
                        ("pivot", 1), ("pivot_break", 0)]
}
MIXTURES: dict[str, tuple[tuple[str, float], ...]] = {
    # training mixtures: (component, share of each batch)
    "baseline": (("sorted", 0.5), ("random", 0.5)),
    "concept": (("sorted", 0.5), ("one_swap", 0.5)),
    "collapse": (("sorted", 0.5), ("random", 0.25), ("one_swap", 0.25)),
    "zigzag": (("zigzag", 0.5), ("zigzag_slip", 0.5)),
    "pivot": (("pivot", 0.5), ("pivot_break", 0.5)),
}


Mixture = str | tuple[tuple[str, float], ...]


def mixture_parts(mixture: Mixture) -> tuple[tuple[str, float], ...]:
    """A named mixture's parts, or explicit ((component, share), ...) checked."""
    if isinstance(mixture, str):
        if mixture not in MIXTURES:
            raise ValueError(f"unknown mixture {mixture!r}; choose from {', '.join(MIXTURES)}")
        return MIXTURES[mixture]
    parts = tuple((str(name), float(share)) for name, share in mixture)
    for name, share in parts:
        if name not in COMPONENTS:
            raise ValueError(f"unknown sequence kind {name!r}; choose from {', '.join(COMPONENTS)}")
        if share < 0:
            raise ValueError(f"share of {name!r} must not be negative, got {share}")
    if not parts or abs(sum(share for _, share in parts) - 1.0) > 1e-6:
        raise ValueError(f"mixture shares must add up to 1, got {parts}")
    return parts


def batch_counts(mixture: Mixture, batch: int) -> list[tuple[str, int]]:
    """Sequences of each component in a batch of ``batch`` (shares rounded, summing to ``batch``)."""
    parts = mixture_parts(mixture)
    counts = [int(round(share * batch)) for _, share in parts]
    counts[0] += batch - sum(counts)
    return [(name, count) for (name, _), count in zip(parts, counts)]


@dataclass
class StepData:
    """Training batches for one model, grouped by length (one length per step).

    ``groups[L] = (x [n_L, B, L] int16, kind [n_L, B] int8)``; step s reads
    ``groups[lengths[s]][.][index[s]]``. ``kind`` indexes ``components``.
    """

    lengths: np.ndarray
    index: np.ndarray
    groups: dict[int, tuple[np.ndarray, np.ndarray]]
    components: tuple[str, ...]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        x, kind = self.groups[int(self.lengths[step])]
        return x[self.index[step]], kind[self.index[step]]

    def labels(self) -> dict[int, np.ndarray]:
        """Ground-truth labels per length group ([n_L, B] float32)."""
        table = np.array([COMPONENTS[c].label for c in self.components], dtype=np.float32)
        return {length: table[kind] for length, (_, kind) in self.groups.items()}

    @property
    def steps(self) -> int:
        return int(self.lengths.size)


def length_schedule(steps: int, rng: np.random.Generator, lengths: tuple[int, int] = TRAIN_LENGTHS) -> np.ndarray:
    return rng.integers(lengths[0], lengths[1] + 1, steps)


def training_data(
    mixture: Mixture, schedule: np.ndarray, batch: int, stream: tuple, vocab: int = VOCAB,
) -> StepData:
    """Batches of ``mixture`` for the lengths in ``schedule``.

    Each component draws from its own stream ``rng_for(*stream, component)`` and the order
    inside each batch from ``rng_for(*stream, "order")``: two mixtures that share a
    component (baseline and concept share "sorted") get the very same sequences of it.
    """
    counts = batch_counts(mixture, batch)
    names = tuple(name for name, _ in counts)
    rngs = {name: rng_for(*stream, name) for name in names}
    order = rng_for(*stream, "order")
    index = np.zeros(schedule.size, dtype=np.int64)
    groups = {}
    for length in sorted(set(int(v) for v in schedule)):
        where = np.flatnonzero(schedule == length)
        index[where] = np.arange(where.size)
        n = where.size
        xs, kinds = [], []
        for k, (name, count) in enumerate(counts):
            if count:
                xs.append(COMPONENTS[name].sample(rngs[name], n * count, length, vocab).reshape(n, count, length))
                kinds.append(np.full((n, count), k, dtype=np.int8))
        x = np.concatenate(xs, axis=1)
        kind = np.concatenate(kinds, axis=1)
        perm = np.argsort(order.random((n, batch)), axis=1)
        groups[length] = (np.take_along_axis(x, perm[:, :, None], axis=1).astype(np.int16),
                          np.take_along_axis(kind, perm, axis=1))
    return StepData(schedule.astype(np.int64), index, groups, names)


@dataclass
class EvalSet:
    """A fixed evaluation set: sequences of one length, their component and ground truth."""

    name: str
    x: np.ndarray
    kind: np.ndarray
    components: tuple[str, ...]

    @property
    def labels(self) -> np.ndarray:
        return np.array([COMPONENTS[c].label for c in self.components], dtype=np.float32)[self.kind]


def eval_set(name: str, parts: tuple[tuple[str, int], ...], length: int, stream: tuple, vocab: int = VOCAB) -> EvalSet:
    """``parts`` = ((component, count), ...), drawn from ``rng_for(*stream, name, component)``."""
    xs, kinds = [], []
    for k, (component, count) in enumerate(parts):
        xs.append(COMPONENTS[component].sample(rng_for(*stream, name, component), count, length, vocab))
        kinds.append(np.full(count, k, dtype=np.int8))
    return EvalSet(name, np.concatenate(xs).astype(np.int16), np.concatenate(kinds), tuple(c for c, _ in parts))
