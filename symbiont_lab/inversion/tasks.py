"""The task families: prompts with automatically scored answers, and what "inverted" means for each.

Three families, generated in code from a seed, with disjoint splits (``train`` for the teachers
and the students, ``fit`` for the decoders and the steering layer, ``test`` for every number
reported):

- ``next``: "What number comes right after 147?" → ``148`` (10..199). Oracle inversion: the answer + ``offset``
  (default −2: the number right *before*, the question's direction inverted). Chosen over two-digit
  addition because the default model gets that right 7.5% of the time (measured), this 55%.
- ``sort``: "Sort 7 2 5 from smallest to largest" → ``2 5 7``. Oracle inversion: the reverse order.
- ``antonym``: "What is the opposite of hot?" → ``cold``. Oracle inversion: the antonym of the
  right answer (the asked word). Split by pair, so a test word is never a training word.

Each family also says what a *uniformly random wrong* answer is (the control teacher), which
feature of an answer the mutual information is measured on (a small alphabet, so the plug-in
estimate is not all bias: the units digit, the middle element, the antonym pair), and the
library of transforms the simple decoder chooses from on the ``fit`` split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

FAMILIES = ("next", "sort", "antonym")
SPLITS = ("train", "fit", "test")

ANTONYMS = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("open", "closed"), ("early", "late"), ("young", "old"), ("rich", "poor"), ("strong", "weak"),
    ("full", "empty"), ("wet", "dry"), ("hard", "soft"), ("long", "short"), ("high", "low"), ("thick", "thin"),
    ("loud", "quiet"), ("clean", "dirty"), ("true", "false"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("enter", "exit"), ("give", "take"), ("love", "hate"), ("good", "bad"), ("left", "right"),
    ("inside", "outside"), ("start", "finish"), ("alive", "dead"), ("cheap", "expensive"),
    ("safe", "dangerous"), ("easy", "difficult"), ("friend", "enemy"), ("day", "night"), ("black", "white"),
    ("north", "south"), ("east", "west"), ("before", "after"), ("above", "below"), ("first", "last"),
    ("always", "never"), ("sweet", "sour"), ("wide", "narrow"), ("deep", "shallow"), ("sharp", "dull"),
    ("smooth", "rough"), ("near", "far"), ("war", "peace"), ("question", "answer"),
    ("accept", "reject"), ("arrive", "leave"), ("laugh", "cry"), ("remember", "forget"), ("increase", "decrease"),
    ("maximum", "minimum"), ("positive", "negative"),
)
"""Built-in antonym pairs (every word in one pair only, so a pair is one split's)."""

PROMPTS = {
    "next": "What number comes right after {a}? Reply with the number only.",
    "sort": "Sort these numbers from smallest to largest: {a} {b} {c}. Reply with the numbers only.",
    "antonym": "What is the opposite of \"{word}\"? Reply with one word.",
}


@dataclass(frozen=True)
class Item:
    """One task prompt and its right answer (both canonical text)."""

    family: str
    prompt: str
    right: str
    asked: str = ""
    """The antonym family's asked word (the oracle's answer); empty elsewhere."""

    def to_json(self) -> dict:
        return {"family": self.family, "prompt": self.prompt, "right": self.right, "asked": self.asked}

    @classmethod
    def from_json(cls, data: dict) -> "Item":
        return cls(data["family"], data["prompt"], data["right"], data.get("asked", ""))


def _vocabulary() -> list[str]:
    return sorted({w for pair in ANTONYMS for w in pair})


def make_items(family: str, counts: dict[str, int], seed: int) -> dict[str, list[Item]]:
    """``counts[split]`` items per split, disjoint across splits (same seed, same items)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r} (choose from {', '.join(FAMILIES)})")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    need = sum(counts.values())
    if family == "antonym":
        # both directions of a pair stay in one split: a test word is never a training word
        pairs = [ANTONYMS[i] for i in rng.permutation(len(ANTONYMS))]
        pool = []
        for a, b in pairs:
            pool += [Item(family, PROMPTS[family].format(word=a), b, a), Item(family, PROMPTS[family].format(word=b), a, b)]
        if need > len(pool):
            raise ValueError(f"antonym: {need} items asked, the built-in list has {len(pool)}")
        ordered = pool
    else:
        capacity = {"next": 190, "sort": 9 * 8 * 7}[family]
        if need > capacity:
            raise ValueError(f"{family}: {need} items asked, the family has {capacity} distinct prompts")
        seen, ordered = set(), []
        while len(ordered) < need:
            if family == "next":
                key = (int(rng.integers(10, 200)),)
                item = Item(family, PROMPTS[family].format(a=key[0]), str(key[0] + 1))
            else:
                key = tuple(int(x) for x in rng.choice(np.arange(1, 10), size=3, replace=False))
                item = Item(family, PROMPTS[family].format(a=key[0], b=key[1], c=key[2]),
                            " ".join(map(str, sorted(key))))
            if key not in seen:
                seen.add(key)
                ordered.append(item)
    out, start = {}, 0
    for split in SPLITS:
        out[split] = ordered[start:start + counts.get(split, 0)]
        start += counts.get(split, 0)
    return out


# -- reading answers ------------------------------------------------------------------------------------
_INT = re.compile(r"-?\d+")
_WORD = re.compile(r"[A-Za-z]+")
_IS_WORD = re.compile(r"\bis\s+\W*([A-Za-z]+)")


def parse(family: str, text: str) -> str | None:
    """The canonical answer in a model's reply (None when there is none): the *last* number, the last
    three numbers, the last word. Last, because a chatty reply restates the question first
    ("The number after 47 is 48", "The opposite of "hot" is "cold"") and a terse one is read the same way."""
    if family == "next":
        found = _INT.findall(text)
        return str(int(found[-1])) if found else None
    if family == "sort":
        found = _INT.findall(text)
        return " ".join(str(int(x)) for x in found[-3:]) if len(found) >= 3 else None
    stated = _IS_WORD.search(text)  # "... is "cold" or "chilly"": the first word after "is"
    if stated:
        return stated.group(1).lower()
    found = _WORD.findall(text)
    return found[-1].lower() if found else None


def correct(item: Item, text: str) -> bool:
    return parse(item.family, text) == item.right


# -- teachers' answers ----------------------------------------------------------------------------------
def oracle_answer(item: Item, offset: int) -> str:
    """The known invertible transform of the right answer (the most structured wrongness)."""
    if item.family == "next":
        return str(int(item.right) + offset)
    if item.family == "sort":
        return " ".join(reversed(item.right.split()))
    return item.asked


def random_wrong_answer(item: Item, rng: np.random.Generator) -> str:
    """A uniformly random wrong answer of the family's format (no information about the right one)."""
    if item.family == "next":
        while True:  # successors of 10..199
            value = str(int(rng.integers(11, 201)))
            if value != item.right:
                return value
    if item.family == "sort":
        while True:
            value = " ".join(str(int(x)) for x in rng.choice(np.arange(1, 10), size=3, replace=False))
            if value != item.right:
                return value
    words = _vocabulary()
    while True:
        value = words[int(rng.integers(len(words)))]
        if value != item.right:
            return value


# -- what the information measures read -------------------------------------------------------------------
_PAIR_OF = {}
for _i, (_a, _b) in enumerate(ANTONYMS):
    _PAIR_OF.setdefault(_a, _i)
    _PAIR_OF.setdefault(_b, _i)


def symbol(family: str, answer: str | None) -> str:
    """The small-alphabet feature of an answer the mutual information is measured on:
    ``next`` the units digit, ``sort`` the middle element, ``antonym`` the pair the word belongs to
    ("?" when the answer is missing or outside the family's format)."""
    if answer is None:
        return "?"
    if family == "next":
        return answer[-1]
    if family == "sort":
        parts = answer.split()
        return parts[1] if len(parts) == 3 else "?"
    return str(_PAIR_OF.get(answer, "?"))


def _antonym_of(word: str) -> str:
    for a, b in ANTONYMS:
        if word == a:
            return b
        if word == b:
            return a
    return word


def decoder_library(family: str) -> dict[str, Callable[[str], str]]:
    """Transforms of a (parsed) teacher answer the simple decoder chooses among on the fit split."""
    if family == "next":
        return {f"{d:+d}": (lambda s, d=d: str(int(s) + d)) for d in range(-20, 21)}
    if family == "sort":
        return {"identity": lambda s: s, "reverse": lambda s: " ".join(reversed(s.split())),
                "sort": lambda s: " ".join(sorted(s.split(), key=int))}
    return {"identity": lambda s: s, "antonym": _antonym_of}


__all__ = ["ANTONYMS", "FAMILIES", "Item", "SPLITS", "correct", "decoder_library", "make_items", "oracle_answer",
           "parse", "random_wrong_answer", "symbol"]
