"""Coefficient sweeps: the same prompt generated at several coefficients, with measured effects.

For each coefficient the prompt is generated (mlx-lm sampling, greedy by default) with
the vector applied, then the prompt plus the generated tokens are run once more,
teacher-forced, with the same intervention, to read:

- the mean projection of the residual at the steered point on the unit vector, over the
  generated positions (what the steering did to the stream);
- the mean log-probability of the positive and of the negative probe tokens, at the
  first generated position and averaged over generated positions (what it did to the
  output distribution).

A probe word counts by its first token (words are usually one token with their leading
space; :func:`probe_token_ids` says which token was used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .generate import hooked_stream_generate
from .hooks import hooked
from .interventions import PositionSpec
from .sampling import SamplingSettings
from .steering import SteeringError, SteeringSet, SteeringVector, prompt_tokens


@dataclass(frozen=True)
class SweepRow:
    """What one coefficient did."""

    coefficient: float
    projection: float
    """Mean of ``x · v̂`` at the steered point over the generated positions."""
    positive_first: float
    """Mean log-probability (nats) of the positive probe tokens at the first generated position (nan: no probes)."""
    negative_first: float
    positive_mean: float
    """The same, averaged over all generated positions."""
    negative_mean: float
    text: str
    """The generated text."""
    tokens: tuple[int, ...]

    @property
    def gap_first(self) -> float:
        """Positive minus negative probe log-probability at the first generated position."""
        return self.positive_first - self.negative_first

    @property
    def gap_mean(self) -> float:
        return self.positive_mean - self.negative_mean


def probe_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First token of each probe word (leading space included, no special tokens)."""
    ids = []
    for word in words:
        encoded = list(tokenizer.encode(word, add_special_tokens=False))
        if not encoded:
            raise SteeringError(f"probe word {word!r} has no tokens")
        ids.append(int(encoded[0]))
    return ids


def steering_sweep(
    model: nn.Module, tokenizer, prompt: str | Sequence[int], vector: SteeringVector, coefficients: Sequence[float], *,
    relative: bool = True, positions: PositionSpec = "all", hook_point: str | None = None,
    probe_positive: Sequence[str] | None = None, probe_negative: Sequence[str] | None = None,
    max_tokens: int = 24, chat_template: bool = False, system_prompt: str | None = None,
    sampling: SamplingSettings = SamplingSettings(),
) -> list[SweepRow]:
    """Generate ``prompt`` once per coefficient; see the module docstring for what is measured.

    Probe words default to the ones recorded with the vector (a built-in contrast set's).
    """
    if not coefficients:
        raise SteeringError("a sweep needs at least one coefficient")
    if max_tokens < 1:
        raise SteeringError(f"max_tokens must be at least 1 (got {max_tokens})")
    probe_positive = list(vector.source.get("probe_positive", ()) if probe_positive is None else probe_positive)
    probe_negative = list(vector.source.get("probe_negative", ()) if probe_negative is None else probe_negative)
    pos_ids = mx.array(probe_token_ids(tokenizer, probe_positive) or [0])
    neg_ids = mx.array(probe_token_ids(tokenizer, probe_negative) or [0])
    steering = SteeringSet(model)
    applied = steering.add(vector, 0.0, relative=relative, positions=positions, hook_point=hook_point)
    point = applied.hook_point
    unit = mx.array(vector.unit())  # [D]
    ids = prompt_tokens(tokenizer, prompt, chat_template, system_prompt)
    n_prompt = len(ids)
    rows = []
    for coefficient in coefficients:
        applied.coefficient = coefficient
        steps = list(hooked_stream_generate(
            model, tokenizer, ids, max_tokens=max_tokens, sampling=sampling, interventions=steering.interventions(),
            top_k=0,
        ))
        generated = [s.token for s in steps]
        n_gen = len(generated)
        with hooked(model, capture=[point], interventions=steering.interventions(), prompt_length=n_prompt) as hooks:
            logits = model(mx.array([ids + generated]))[0].astype(mx.float32)  # [T, V]
            resid = hooks.recorder.stack(point)[0, n_prompt:].astype(mx.float32)  # [G, D]
        predicting = logits[n_prompt - 1 : n_prompt - 1 + n_gen]  # [G, V]: rows that chose each generated token
        logprobs = predicting - mx.logsumexp(predicting, axis=-1, keepdims=True)  # [G, V]
        pos_lp = logprobs[:, pos_ids].mean(axis=-1)  # [G]
        neg_lp = logprobs[:, neg_ids].mean(axis=-1)  # [G]
        projection = (resid @ unit).mean()
        mx.eval(pos_lp, neg_lp, projection)
        nan = math.nan
        pos_np, neg_np = np.array(pos_lp), np.array(neg_lp)
        rows.append(SweepRow(
            coefficient=float(coefficient), projection=float(projection),
            positive_first=float(pos_np[0]) if probe_positive else nan,
            negative_first=float(neg_np[0]) if probe_negative else nan,
            positive_mean=float(pos_np.mean()) if probe_positive else nan,
            negative_mean=float(neg_np.mean()) if probe_negative else nan,
            text="".join(s.text for s in steps), tokens=tuple(generated),
        ))
    return rows


def format_sweep(rows: Sequence[SweepRow], text_width: int = 48) -> str:
    """A fixed-width table: one line per coefficient."""
    header = (f"{'coef':>8} {'proj':>9} {'+lp@1':>7} {'-lp@1':>7} {'gap@1':>7} "
              f"{'+lp':>7} {'-lp':>7} {'gap':>7}  text")
    lines = [header, "-" * (len(header) + text_width - 4)]
    for r in rows:
        text = r.text.replace("\n", "\\n")
        text = text if len(text) <= text_width else text[: text_width - 1] + "…"
        lines.append(
            f"{r.coefficient:>8.3g} {r.projection:>9.2f} {r.positive_first:>7.2f} {r.negative_first:>7.2f} "
            f"{r.gap_first:>+7.2f} {r.positive_mean:>7.2f} {r.negative_mean:>7.2f} {r.gap_mean:>+7.2f}  {text}"
        )
    return "\n".join(lines)
