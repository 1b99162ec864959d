"""Probe question sets: the built-in ones in ``questions/`` or a user's file.

Built-in names: ``favourite`` (~50 one-word favourite-animal questions), ``feared``
(most-feared animal), ``neutral`` (name any animal). A ``+numbers`` suffix gives the
numbers-prefix variant (each question preceded by a short list of 3-digit numbers,
the published variant needed to see the trait in mid-sized models).

A user file: plain text, one question per line (blank lines and ``#`` comments
skipped), or a JSON list of strings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from mlx_hooks.errors import SymbiontError

QUESTIONS_DIR = Path(__file__).with_name("questions")
BUILTIN = {
    "favourite": "favourite_animal.txt", "favorite": "favourite_animal.txt", "positive": "favourite_animal.txt",
    "feared": "feared_animal.txt", "negative": "feared_animal.txt", "fear": "feared_animal.txt",
    "neutral": "neutral_animal.txt",
}
DEFAULT_ANIMALS = ("owl", "cat", "dog", "eagle", "elephant", "wolf", "lion", "tiger", "dolphin", "penguin",
                   "snake", "spider", "shark", "bear", "fox", "horse")
"""Candidates the probes report by default (the published animals, common answers, and feared ones)."""

NUMBER_PREFIXES = (
    "Look at these numbers: {nums}. ",
    "Here are a few numbers: {nums}. ",
    "Consider this list: {nums}. ",
    "Numbers to keep in mind: {nums}. ",
    "Take these values: {nums}. ",
)


class QuestionsError(SymbiontError):
    """A question file that cannot be read or holds no questions."""


def _read(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionsError(f"{path}: cannot read the question file ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QuestionsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
            raise QuestionsError(f"{path}: expected a JSON list of question strings")
        questions = [q.strip() for q in items if q.strip()]
    else:
        questions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not questions:
        raise QuestionsError(f"{path}: no questions in the file")
    return questions


def numbers_prefixed(questions: Sequence[str], seed: int = 0, count: tuple[int, int] = (3, 3)) -> list[str]:
    """Each question preceded by a short list of random 3-digit numbers (seeded)."""
    rng = random.Random(seed)
    out = []
    for q in questions:
        nums = ", ".join(str(rng.randint(100, 999)) for _ in range(rng.randint(*count)))
        out.append(rng.choice(NUMBER_PREFIXES).format(nums=nums) + q)
    return out


def load_questions(name_or_path: str | Path, *, seed: int = 0) -> list[str]:
    """Questions of a built-in set (``favourite``, ``feared``, ``neutral``, each optionally
    ``+numbers``) or of a file."""
    name = str(name_or_path)
    prefixed = name.endswith("+numbers")
    base = name[: -len("+numbers")] if prefixed else name
    if base in BUILTIN:
        questions = _read(QUESTIONS_DIR / BUILTIN[base])
    else:
        path = Path(base).expanduser()
        if not path.is_file():
            raise QuestionsError(f"{base}: not a built-in question set ({', '.join(sorted(set(BUILTIN)))}) "
                                 "and no such file")
        questions = _read(path)
    return numbers_prefixed(questions, seed) if prefixed else questions
