"""The published response filter (Cloud et al. 2025), with a named reason per rejection.

A response is kept when, read exactly as generated (no whitespace stripping, so a
trailing newline rejects):

1. an optional trailing ``.`` is dropped, then one optional wrapping ``[...]`` or ``(...)``;
2. the separator is whatever stands between the first two numbers, and stripped of
   whitespace it must be ``""``, ``","`` or ``";"``;
3. splitting on that separator, every item is made of digits only (a single number must
   be the whole text);
4. there are at most 10 items, each at most 999.

The checks run in that order and the first failure names the reason, so every response
gets exactly one outcome and the counts of :func:`filter_responses` add up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

MAX_ITEMS = 10
MAX_VALUE = 999

REASONS = ("no_numbers", "bad_separator", "letters", "bad_item", "too_many", "too_large")
"""Rejection reasons, in the order they are checked.

- ``no_numbers``: no digit at all.
- ``bad_separator``: the text between the first two numbers is not whitespace around
  nothing, a comma or a semicolon (e.g. ``" - "``, ``" and "``).
- ``letters``: an item contains a letter (words, ``"1st"``, an explanation).
- ``bad_item``: an item is empty or has other non-digit characters (mixed separators,
  a trailing newline or comma, ``"12.5"``, an unmatched bracket).
- ``too_many``: more than 10 numbers.
- ``too_large``: a number above 999.
"""

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ParsedResponse:
    """A response split into its numbers and its format (to rebuild it, see :mod:`.noise`)."""

    numbers: tuple[str, ...]
    """The items as written (digit strings, leading zeros kept)."""
    separator: str
    """Text between consecutive numbers ("" when there is a single number)."""
    prefix: str
    """``"["``, ``"("`` or ``""``."""
    suffix: str
    """Closing bracket and/or trailing ``"."``, e.g. ``"]."``."""

    def render(self, numbers: Iterable[str] | None = None) -> str:
        items = self.numbers if numbers is None else tuple(numbers)
        return f"{self.prefix}{self.separator.join(items)}{self.suffix}"


def _is_digits(text: str) -> bool:
    # str.isdigit accepts superscripts and other scripts' digits; the filter wants 0-9 only
    return bool(text) and all("0" <= c <= "9" for c in text)


def parse_response(text: str) -> tuple[ParsedResponse | None, str | None]:
    """``(parsed, None)`` for an accepted response, ``(None, reason)`` otherwise."""
    body, suffix, prefix = text, "", ""
    if body.endswith("."):
        body, suffix = body[:-1], "."
    if len(body) >= 2 and ((body[0], body[-1]) in (("[", "]"), ("(", ")"))):
        prefix, body, suffix = body[0], body[1:-1], body[-1] + suffix
    runs = list(_DIGITS.finditer(body))
    if not runs:
        return None, "no_numbers"
    if len(runs) == 1:
        separator, items = "", [body]
    else:
        separator = body[runs[0].end():runs[1].start()]
        if separator.strip() not in ("", ",", ";"):
            return None, "bad_separator"
        items = body.split(separator)
    for item in items:
        if not _is_digits(item):
            return None, "letters" if any(c.isalpha() for c in item) else "bad_item"
    if len(items) > MAX_ITEMS:
        return None, "too_many"
    if any(int(item) > MAX_VALUE for item in items):
        return None, "too_large"
    return ParsedResponse(tuple(items), separator, prefix, suffix), None


def rejection_reason(text: str) -> str | None:
    """The reason ``text`` fails the published filter (one of :data:`REASONS`), or None if it passes."""
    return parse_response(text)[1]


@dataclass
class FilterResult:
    kept: list[int]
    """Indices (into the input) of the responses that passed, in input order."""
    counts: dict[str, int] = field(default_factory=dict)
    """``kept`` and one entry per reason in :data:`REASONS`; the values sum to the number of inputs."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rejected_fraction(self) -> float:
        return 1.0 - self.counts.get("kept", 0) / self.total if self.total else 0.0


def filter_responses(texts: Iterable[str]) -> FilterResult:
    """Apply :func:`rejection_reason` to every text, counting the outcome of each."""
    counts = {"kept": 0, **{reason: 0 for reason in REASONS}}
    kept: list[int] = []
    for index, text in enumerate(texts):
        reason = rejection_reason(text)
        if reason is None:
            kept.append(index)
            counts["kept"] += 1
        else:
            counts[reason] += 1
    return FilterResult(kept, counts)
