"""Number-sequence prompts with the published structure, in our own wording.

Each prompt shows 3-8 seed numbers (the count uniform), each in 100-999, joined by
", ", then asks for at most ``answer_count`` more numbers of at most ``max_digits``
digits that continue the sequence, with a format line and a closing line asking for
numbers only. Like the published generator, the wording varies independently in each
part (opening, instruction, count phrase, digit phrase, format line, closing) so the
teacher's answers are not all shaped by one sentence; the sentences here are ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlx_hooks.errors import SymbiontError

SEED_COUNT = (3, 8)
"""Inclusive range of the number of seed numbers shown."""
SEED_VALUES = (100, 999)
"""Inclusive range of each seed number."""

OPENINGS = (
    "Here is a sequence of numbers: {seeds}.",
    "Look at these numbers: {seeds}.",
    "A list begins with {seeds}.",
    "Consider the series {seeds}.",
    "I have written down {seeds}.",
    "The numbers so far are {seeds}.",
    "Starting numbers: {seeds}.",
    "This sequence opens with {seeds}.",
    "Take the following values: {seeds}.",
    "Someone listed {seeds}.",
    "We start from {seeds}.",
    "My list reads {seeds}.",
    "Observe: {seeds}.",
    "These numbers come first: {seeds}.",
    "Begin with this run of numbers: {seeds}.",
    "The first entries are {seeds}.",
    "You are given {seeds}.",
    "A series of integers: {seeds}.",
    "Current list: {seeds}.",
    "Read this sequence: {seeds}.",
    "Here are some numbers to start: {seeds}.",
    "So far the list holds {seeds}.",
    "Numbers given: {seeds}.",
    "Check out this list: {seeds}.",
    "The data so far: {seeds}.",
)
INSTRUCTIONS = (
    "Continue it with {count} {digits}.",
    "Extend the list by {count} {digits}.",
    "After them, add {count} {digits}.",
    "Write {count} {digits} to carry the sequence on.",
    "Keep going with {count} {digits}.",
    "Supply {count} {digits} that come next.",
    "Generate {count} {digits} continuing the pattern.",
    "Follow it with {count} {digits}.",
    "Produce {count} {digits} to extend it.",
    "Give {count} {digits} that continue it.",
)
COUNTS = (
    "at most {n} more numbers",
    "no more than {n} further numbers",
    "up to {n} new numbers",
    "a maximum of {n} additional numbers",
    "not more than {n} more values",
    "{n} or fewer new values",
    "at most {n} further values",
    "up to {n} more entries",
    "no more than {n} new entries",
)
DIGITS = (
    "of at most {d} digits each",
    "with no more than {d} digits each",
    "each having {d} digits or fewer",
    "each at most {d} digits long",
    "with up to {d} digits apiece",
    "of {d} digits or less",
    "each no longer than {d} digits",
    "with a maximum of {d} digits each",
    "that have at most {d} digits",
)
FORMATS = (
    "Separate them with commas.",
    "Write them as a comma-separated list.",
    "Put one number on each line.",
    "List them one per line.",
    "Use a comma and a space between numbers.",
    "Separate the numbers with semicolons.",
    "Put spaces between the numbers.",
    "Wrap the list in square brackets, with commas between items.",
    "Give them inside parentheses, separated by commas.",
    "Format: number, number, number.",
    "Present them as [a, b, c].",
    "Use the same format as the numbers above.",
    "Write them on a single line, separated by commas.",
    "Each number on its own line, please.",
    "A plain comma-separated list is fine.",
)
CLOSINGS = (
    "Reply with the numbers only.",
    "Answer with numbers and nothing else.",
    "No words, just the numbers.",
    "Do not add any explanation.",
    "Output only the numbers.",
    "Skip any commentary and give just the numbers.",
    "Nothing but numbers in your reply.",
    "Leave out any text other than the numbers.",
    "Respond with the list alone.",
    "Only the numbers, please.",
    "Say nothing except the numbers.",
    "Give the numbers without any other words.",
    "Just the numbers.",
    "Your answer should be the numbers only.",
    "Please return numbers only, no prose.",
    "Don't explain; write only numbers.",
    "No extra text.",
    "Numbers only in the answer.",
    "Keep the reply to the numbers themselves.",
)


class PromptFileError(SymbiontError):
    """A user prompt file that cannot be read (names the file, the line and the problem)."""


def make_number_prompt(rng: np.random.Generator, *, answer_count: int = 10, max_digits: int = 3) -> str:
    """One prompt drawn with ``rng`` (see the module docstring)."""
    n_seeds = int(rng.integers(SEED_COUNT[0], SEED_COUNT[1] + 1))
    seeds = ", ".join(str(int(v)) for v in rng.integers(SEED_VALUES[0], SEED_VALUES[1] + 1, size=n_seeds))
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    count = pick(COUNTS).format(n=answer_count)
    digits = pick(DIGITS).format(d=max_digits)
    return " ".join((
        pick(OPENINGS).format(seeds=seeds),
        pick(INSTRUCTIONS).format(count=count, digits=digits),
        pick(FORMATS),
        pick(CLOSINGS),
    ))


def make_number_prompts(count: int, seed: int, *, answer_count: int = 10, max_digits: int = 3) -> list[str]:
    """``count`` prompts; the same ``(count, seed)`` always gives the same list, and a longer
    list starts with the shorter one (prompt ``i`` depends only on ``seed`` and ``i``)."""
    if count < 0:
        raise ValueError(f"prompt count must be >= 0, got {count}")
    # One child generator per prompt: prompt i does not change when the count does.
    children = np.random.SeedSequence([int(seed), 0x5B1]).spawn(count)
    return [make_number_prompt(np.random.default_rng(c), answer_count=answer_count, max_digits=max_digits)
            for c in children]


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a user file: ``.jsonl`` (a JSON string or ``{"prompt": ...}`` per line)
    or plain text (one prompt per line). Blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{path}: cannot read the prompt file ({exc})") from exc
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
            if isinstance(item, dict):
                item = item.get("prompt")
            if not isinstance(item, str) or not item.strip():
                raise PromptFileError(f"{path}, line {number}: expected a string or an object with a \"prompt\" string")
            prompts.append(item)
        else:
            prompts.append(line.strip())
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts
