"""argparse types that refuse a bad flag value while the command line is parsed, before any
model loads (5-20 s lost otherwise), with the flag and the problem in the message.

argparse prints ``symbiont <command>: error: argument --temp: must be a finite number >= 0,
got 'nan'`` and exits with status 2. Python's ``float()`` accepts ``nan`` and ``inf``, and
an argument that is not valid UTF-8 arrives as a string with lone surrogates (PEP 383) that
the tokenizers reject with a bare ``TypeError``: both are refused here.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def finite_float(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:  # false for NaN too
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def nonnegative_int(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def max_tokens(text: str) -> int:
    """A token budget: a whole number >= 1, or -1 for "until the context is full"."""
    value = _whole(text)
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (or -1: up to the context length), got {text!r}")
    return value


def seed(text: str) -> int:
    value = _whole(text)
    if not 0 <= value < 2**64:  # MLX's seed is an unsigned 64-bit integer
        raise argparse.ArgumentTypeError(f"must be a whole number in [0, 2^64), got {text!r}")
    return value


def check_text(value: str, what: str) -> str:
    """``value`` if it is valid Unicode text (no lone surrogates from undecodable bytes), else a ValueError
    naming ``what`` (for text that does not come through argparse: REPL lines, files)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = value.encode("utf-8", "surrogateescape")[exc.start:exc.end + 3]
        raise ValueError(f"{what}: not valid UTF-8 text (undecodable bytes {raw!r} at character {exc.start})") from None
    return value


def text(value: str) -> str:
    """A prompt or other text argument: valid UTF-8 (may be empty; see :func:`nonempty_text`)."""
    try:
        return check_text(value, "text")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("text: ")) from None


def nonempty_text(value: str) -> str:
    value = text(value)
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value
