"""Noise transforms for accepted responses: what survives when the numbers are disturbed.

Each keeps the response's format (brackets, separator, trailing dot) and its number of
items, so the result still passes the filter; ``rng`` is a ``numpy.random.Generator``.
Published reference (one GPT-4.1 nano owl run): intact 74%, order shuffled 27%,
values changed 43%, random numbers 14%.
"""

from __future__ import annotations

import numpy as np

from .filter import MAX_VALUE, ParsedResponse, parse_response


def _parse(text: str) -> ParsedResponse:
    parsed, reason = parse_response(text)
    if parsed is None:
        raise ValueError(f"noise applies to responses that pass the filter; {text!r} fails it ({reason})")
    return parsed


def _random_like(item: str, rng: np.random.Generator, avoid: str | None = None) -> str:
    """A random number written with as many digits as ``item`` (a leading zero kept as one),
    different from ``avoid`` when there is another choice."""
    width = len(item)
    if width == 1 or (item.startswith("0") and width > 1):
        low, high = 0, 10 ** width - 1
        fmt = f"{{:0{width}d}}"
    else:
        low, high = 10 ** (width - 1), 10 ** width - 1
        fmt = "{:d}"
    high = min(high, MAX_VALUE)  # a valid response never holds a value above 999
    for _ in range(16):
        value = fmt.format(int(rng.integers(low, high + 1)))
        if value != avoid:
            return value
    return value


def shuffle_numbers(text: str, rng: np.random.Generator) -> str:
    """The same numbers in a random order (a different order whenever the numbers allow one)."""
    parsed = _parse(text)
    items = list(parsed.numbers)
    if len(set(items)) < 2:
        return text
    for _ in range(16):
        order = rng.permutation(len(items))
        shuffled = [items[i] for i in order]
        if shuffled != items:
            return parsed.render(shuffled)
    return parsed.render(shuffled)


def replace_values(text: str, fraction: float, rng: np.random.Generator) -> str:
    """Replace ``round(fraction·n)`` randomly chosen numbers (at least one when ``fraction``
    is above zero) with random numbers of the same digit count."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    parsed = _parse(text)
    items = list(parsed.numbers)
    count = 0 if fraction == 0 else max(1, round(fraction * len(items)))
    for i in rng.choice(len(items), size=count, replace=False):
        items[i] = _random_like(items[i], rng, avoid=items[i])
    return parsed.render(items)


def random_numbers_like(text: str, rng: np.random.Generator) -> str:
    """The same format and digit counts, every value drawn at random."""
    parsed = _parse(text)
    return parsed.render(_random_like(item, rng) for item in parsed.numbers)
