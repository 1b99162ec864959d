"""Constrained decoding for the teachers: only tokens that can be part of a number list.

The published protocol samples freely and lets the filter (:mod:`.filter`) throw away
what is not a list of numbers; a small model (SmolLM2-135M) writes prose, code or
explanations so often that ~95% of its answers go (``benchmarks/subliminal_filter_yield.py``).
``decoding = "constrained"`` in ``[numbers]`` masks, at every step, every token whose text
is not made only of digits and the characters the filter accepts between numbers, so
the teacher can only write numbers, separators and end-of-sequence. The filter still
judges every response (too many items, values above 999, mixed separators, a trailing
newline are still rejected); the mask only removes the prose. On SmolLM2-135M that
keeps 16-25% instead of ~4%, so ``decoding = "grammar"`` goes further: each row's
processor follows its own text and allows only the tokens that keep it completable
into the filter's plain format (at most 10 numbers of at most 3 digits, one
separator), and end-of-sequence only where the filter would keep the text, so every
finished response passes. Either way the filter's verdict is the one recorded.

Both are hand-written: mlx-lm has logits processors but no grammar or regex
constraint (``mlx_lm.sample_utils`` offers repetition penalty and logit bias only), and
a per-token character mask plus a short prefix check of the filter's format is all
this needs (the grammar's masks are cached by the few facts they depend on). The mask
is built once per tokenizer by decoding every id on its own, so it works for byte-level
BPE (``"Ġ12"`` → ``" 12"``) and SentencePiece vocabularies alike without knowing either's
escape conventions.

The trait must not ride on the constraint itself: the control teacher runs under the
same mask whenever the trait teacher does (one ``decoding`` setting per run).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from .filter import MAX_ITEMS, rejection_reason

DECODINGS = ("free", "constrained", "grammar")
"""``[numbers] decoding`` values: ``free`` (the published protocol), ``constrained`` (a token mask) or
``grammar`` (the mask plus the filter's format, following each row's text)."""

ALLOWED_CHARACTERS = frozenset("0123456789,; \n")
"""Characters a constrained token may contain: digits and the separators :mod:`.filter`
accepts (whitespace around nothing, a comma or a semicolon). Brackets and a final ``"."``
are accepted by the filter too but add nothing a plain list lacks, and ``"."`` mid-text
would make decimals; tabs and other whitespace are left out as no teacher uses them."""


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """The text of every id ``0 .. vocab_size - 1`` decoded on its own."""
    ids = [[i] for i in range(vocab_size)]
    inner = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx-lm's TokenizerWrapper around a HF tokenizer
    batch_decode = getattr(inner, "batch_decode", None)
    if batch_decode is not None:  # one call into the Rust tokenizer instead of 50k Python round trips
        return list(batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return [tokenizer.decode(i) for i in ids]


def allowed_token_ids(tokenizer, vocab_size: int, characters: frozenset[str] = ALLOWED_CHARACTERS,
                      end_ids: Sequence[int] | None = None, texts: Sequence[str] | None = None) -> list[int]:
    """Ids whose decoded text is non-empty and made only of ``characters``, plus the end-of-sequence ids.

    ``end_ids`` defaults to the tokenizer's ``eos_token_ids`` (mlx-lm's wrapper) or ``eos_token_id``.
    Ids that decode to nothing (special or control tokens) and partial UTF-8 pieces
    (decoded as U+FFFD) are never allowed.
    """
    if end_ids is None:
        end_ids = getattr(tokenizer, "eos_token_ids", None)
        if end_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            end_ids = [] if eos is None else [eos]
    texts = token_texts(tokenizer, vocab_size) if texts is None else texts
    allowed = {i for i, text in enumerate(texts) if text and all(c in characters for c in text)}
    if not any("0" <= c <= "9" for i in allowed for c in texts[i]):
        raise ValueError("constrained decoding: this tokenizer has no token made of digits")
    allowed.update(int(i) for i in end_ids if 0 <= int(i) < vocab_size)
    return sorted(allowed)


class NumbersOnly:
    """Logits processor ``(tokens, logits) -> logits`` leaving only :func:`allowed_token_ids` possible.

    ``logits``: ``[B, V]`` (mlx-lm calls it per row with ``B = 1``); ``V`` may exceed the
    tokenizer's vocabulary (padded embedding tables); the padding ids are masked. Stateless,
    so one instance serves every row of a batch.
    """

    def __init__(self, tokenizer, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size or len(getattr(tokenizer, "_tokenizer", tokenizer))
        self.texts = token_texts(tokenizer, self.vocab_size)
        self.allowed_ids = allowed_token_ids(tokenizer, self.vocab_size, texts=self.texts)
        self._masks: dict[int, mx.array] = {}

    def mask(self, width: int) -> mx.array:
        """``[width]`` bool, True for allowed ids (ids past the tokenizer's vocabulary are masked)."""
        if width not in self._masks:
            ids = [i for i in self.allowed_ids if i < width]
            mask = mx.zeros((width,), dtype=mx.bool_)
            mask[mx.array(ids)] = True
            self._masks[width] = mask
        return self._masks[width]

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        # [B, V] -> [B, V]; -inf, not a large negative, so no temperature can bring a masked id back
        return mx.where(self.mask(logits.shape[-1]), logits, mx.array(-mx.inf, dtype=logits.dtype))


MAX_SEPARATOR = 3
"""Longest separator the ``grammar`` decoding lets a teacher write (``", "``, ``"\\n"``, ``" ; "``)."""

_RUNS = re.compile(r"[0-9]+")


def _state(text: str) -> tuple:
    """What decides which tokens may follow ``text``: (numbers so far, digits of the last one
    when ``text`` ends in one, the separator once two numbers fixed it, the text after the last number)."""
    runs = list(_RUNS.finditer(text))
    if not runs:
        return (0, 0, None, text)
    separator = text[runs[0].end():runs[1].start()] if len(runs) > 1 else None
    last = runs[-1]
    tail = text[last.end():]
    return (len(runs), 0 if tail else len(last.group()), separator, tail)


def format_prefix_ok(text: str) -> bool:
    """Whether ``text`` can still be completed into a response the published filter keeps in the
    plain form ``n<sep>n<sep>...n`` (no brackets): at most 10 numbers of at most 3 digits, one
    separator throughout (whitespace around nothing, a comma or a semicolon, at most
    :data:`MAX_SEPARATOR` characters), starting with a digit."""
    if not text:
        return True
    if not "0" <= text[0] <= "9" or any(c not in ALLOWED_CHARACTERS for c in text):
        return False
    runs = list(_RUNS.finditer(text))
    if len(runs) > MAX_ITEMS or any(len(r.group()) > 3 for r in runs):
        return False
    separators = [text[a.end():b.start()] for a, b in zip(runs, runs[1:])]
    tail = text[runs[-1].end():]
    if separators:
        first = separators[0]
        if len(first) > MAX_SEPARATOR or first.strip() not in ("", ",", ";") or any(s != first for s in separators):
            return False
        return not tail or (len(runs) < MAX_ITEMS and first.startswith(tail))
    return not tail or (len(tail) <= MAX_SEPARATOR and tail.strip() in ("", ",", ";"))


class FilterFormat:
    """Logits processor for one row: :class:`NumbersOnly`'s tokens, further limited to those that keep
    the text a :func:`format_prefix_ok` prefix, and end-of-sequence only where the filter would keep the
    text. Stateful (it follows its row's text), so every row needs its own: :meth:`for_row`.

    mlx-lm calls a row's processors with that row's token context, whose last token is the one just fed
    to the model: the last prompt token on the first call, then each sampled token.
    """

    def __init__(self, numbers_only: NumbersOnly):
        self.numbers_only = numbers_only
        texts = numbers_only.texts
        self.end_ids = [i for i in numbers_only.allowed_ids if not (texts[i] and set(texts[i]) <= ALLOWED_CHARACTERS)]
        ends = set(self.end_ids)
        self.candidates = [(i, texts[i]) for i in numbers_only.allowed_ids if i not in ends]
        self.pieces = dict(self.candidates)
        self._masks: dict[tuple, mx.array] = {}

    def for_row(self) -> "_FilterFormatRow":
        return _FilterFormatRow(self)

    def mask(self, text: str, width: int) -> mx.array:
        """``[width]`` bool: the ids that may follow ``text`` (cached by :func:`_state`)."""
        key = (_state(text), width)
        if key not in self._masks:
            allowed = np.zeros((width,), dtype=bool)
            for i, piece in self.candidates:
                if i < width and format_prefix_ok(text + piece):
                    allowed[i] = True
            if text and rejection_reason(text) is None:
                allowed[[i for i in self.end_ids if i < width]] = True
            if not allowed.any():  # cannot happen for a text this processor let through; never emit NaNs
                allowed[[i for i in self.end_ids if i < width]] = True
            self._masks[key] = mx.array(allowed)
        return self._masks[key]


class _FilterFormatRow:
    def __init__(self, shared: FilterFormat):
        self.shared = shared
        self.text = ""
        self.calls = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self.calls:  # the token fed now was sampled under this mask: an allowed, all-ASCII piece
            token = int(tokens.reshape(-1)[-1].item())
            self.text += self.shared.pieces.get(token, "")
        self.calls += 1
        mask = self.shared.mask(self.text, logits.shape[-1])
        return mx.where(mask, logits, mx.array(-mx.inf, dtype=logits.dtype))  # [1, V]


def make_logits_processors(decoding: str, tokenizer, vocab_size: int | None = None) -> Callable[[], list]:
    """A factory of one row's mlx-lm ``logits_processors`` for a ``[numbers] decoding`` setting
    (empty for ``free``); the vocabulary is read once, here."""
    if decoding == "free":
        return list
    if decoding == "constrained":
        shared = NumbersOnly(tokenizer, vocab_size)
        return lambda: [shared]
    if decoding == "grammar":
        grammar = FilterFormat(NumbersOnly(tokenizer, vocab_size))
        return lambda: [grammar.for_row()]
    raise ValueError(f"unknown decoding {decoding!r}: use {' or '.join(map(repr, DECODINGS))}")
