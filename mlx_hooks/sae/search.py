"""Find latents: by label text, by what is active on a chosen token, by contrasting two prompt sets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..activation_cache import ActivationRecorder
from .fit import check_fits
from .meters import FeatureMeter, LatentValue
from .model import SAE
from .text_activations import iter_text_activations, tokenize_texts, tokens_per_batch_for

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class LabelMatch:
    """A latent whose label matches a query."""

    index: int
    label: str
    score: float
    """Higher is better: exact label 100, whole query inside 10, each query word 3 (as a word) or 1 (inside a word)."""


@dataclass(frozen=True)
class ContrastLatent:
    """A latent whose mean activation differs between two prompt sets."""

    index: int
    mean_a: float
    """Mean activation over every token of set A (zeros included)."""
    mean_b: float
    difference: float
    """``mean_a − mean_b``."""
    label: str


def _labels_of(source: SAE | Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    if isinstance(source, SAE):
        if source.labels is None:
            raise ValueError(f"SAE {source.cfg.sae_id} has no labels: build or load its feature records first")
        return {i: str(label) for i, label in enumerate(source.labels)}
    if isinstance(source, Mapping):
        return {int(i): str(label) for i, label in source.items()}
    return {i: str(label) for i, label in enumerate(source)}


def search_labels(source: SAE | Sequence[str] | Mapping[int, str], query: str, limit: int = 20) -> list[LabelMatch]:
    """Latents whose label matches ``query`` (case-insensitive words or substrings), best first.

    Ties go to the shorter label (a closer match), then to the lower index.
    """
    needle = query.strip().lower()
    if not needle:
        raise ValueError("empty label query")
    words = _WORD.findall(needle) or [needle]
    matches = []
    for index, label in _labels_of(source).items():
        text = label.lower()
        score = 100.0 if text.strip() == needle else 10.0 if needle in text else 0.0
        label_words = set(_WORD.findall(text))
        for word in words:
            score += 3.0 if word in label_words else 1.0 if word in text else 0.0
        if score > 0:
            matches.append(LabelMatch(index, label, score))
    matches.sort(key=lambda m: (-m.score, len(m.label), m.index))
    return matches[:limit]


def latents_at(
    sae: SAE,
    source: ActivationRecorder | mx.array | np.ndarray,
    position: int | None = None,
    top_n: int = 20,
    point: str | None = None,
) -> list[LatentValue]:
    """Active latents at one token, strongest first.

    ``source`` is a recorder that captured the SAE's point (e.g. ``ChatSession.recorder``)
    with the token's absolute ``position`` — the residual *at* that token — or a
    ``[d_in]`` activation.
    """
    if isinstance(source, ActivationRecorder):
        if position is None:
            raise ValueError("latents_at: give the position of the token in the recorder")
        x = source.at(point or sae.cfg.hook_point, position)[0]  # [d_in] (batch row 0)
    else:
        x = source
    return list(FeatureMeter(sae, top_n=top_n).read(x).top)


def mean_latent_activations(
    sae: SAE,
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_seq_len: int = 128,
    memory_budget_bytes: int = 256 * 2**20,
    skip_first: bool = True,
) -> tuple[np.ndarray, int]:
    """Each latent's mean activation over every token of ``texts`` (``[d_sae]`` float64) and the token count."""
    check_fits(sae, model)
    sums = np.zeros(sae.cfg.d_sae, dtype=np.float64)
    n = 0
    batch_tokens = tokens_per_batch_for(memory_budget_bytes, sae.cfg.d_in, sae.cfg.d_sae, max_seq_len)
    for batch in iter_text_activations(model, tokenize_texts(tokenizer, texts), sae.cfg.hook_point,
                                       max_seq_len=max_seq_len, tokens_per_batch=batch_tokens, skip_first=skip_first):
        sums += np.array(sae.encode(batch.acts).sum(axis=0), dtype=np.float64)
        n += batch.acts.shape[0]
    if n == 0:
        raise ValueError("no tokens to average over (texts empty, or only one token each with skip_first)")
    return sums / n, n


def contrast_latents(
    sae: SAE,
    model: nn.Module,
    tokenizer,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    top_n: int = 20,
    direction: str = "a",
    **kwargs,
) -> list[ContrastLatent]:
    """Latents whose mean activation differs most between prompt sets A and B.

    ``direction``: ``a`` (more active on A first), ``b`` (more active on B first) or
    ``both`` (largest absolute difference first). Latents with no difference are left
    out. ``kwargs`` go to :func:`mean_latent_activations`.
    """
    if direction not in ("a", "b", "both"):
        raise ValueError(f"unknown direction {direction!r}: use a, b or both")
    mean_a, _ = mean_latent_activations(sae, model, tokenizer, texts_a, **kwargs)
    mean_b, _ = mean_latent_activations(sae, model, tokenizer, texts_b, **kwargs)
    diff = mean_a - mean_b
    key = {"a": -diff, "b": diff, "both": -np.abs(diff)}[direction]
    order = np.argsort(key, kind="stable")
    labels = sae.labels
    out = []
    for i in order:
        if len(out) == top_n or diff[i] == 0 or (direction == "a" and diff[i] < 0) or (direction == "b" and diff[i] > 0):
            break
        out.append(ContrastLatent(int(i), float(mean_a[i]), float(mean_b[i]), float(diff[i]),
                                  str(labels[i]) if labels is not None else ""))
    return out
