"""A language model's activations for a list of texts, at hook points of every layer (and an SAE's latents).

One forward pass per text (texts are short; no padding to reason about), all requested points
captured with :func:`mlx_hooks.hooked`. Position 0 is left out of every statistic: the first
token of a context is an attention sink whose activations look like no other position's (the
SAE trainer leaves it out for the same reason), unless the text is a single token.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from mlx_hooks import hooked
from mlx_hooks.hooks import hook_points

from .experiments import SuperpositionError

POINT_KINDS = ("resid_pre", "resid_post", "attn_z", "attn_out", "mlp_hidden", "mlp_out")
"""Per-layer hook point kinds a probe or NMF can read (see :mod:`mlx_hooks.points`)."""
SAE_KIND = "sae"
"""The pseudo-kind of an SAE's latents (read at the SAE's own hook point)."""


def points_of(model, kinds: Sequence[str], layers: Sequence[int] | None = None) -> dict[str, list[str]]:
    """``{kind: [point names in layer order]}`` that exist on ``model`` (``layers``: a subset, negative
    indices from the end; None: all). ``mlp_hidden`` is missing on mixture-of-experts layers; a kind
    with no point left is an error."""
    available = hook_points(model)
    n_layers = sum(p.startswith("resid_post.") for p in available)
    wanted = None if layers is None else {int(i) % n_layers for i in layers}
    out = {}
    for kind in kinds:
        if kind not in POINT_KINDS:
            raise SuperpositionError(f"unknown point kind {kind!r} (choose from {', '.join(POINT_KINDS)}, {SAE_KIND})")
        names = [p for p in available if p.startswith(kind + ".")
                 and (wanted is None or int(p.split(".")[1]) in wanted)]
        if not names:
            raise SuperpositionError(f"this model has no {kind} points" + (f" at layers {sorted(wanted)}" if wanted else ""))
        out[kind] = names
    return out


def text_activations(model, tokenizer, texts: Sequence[str], points: Sequence[str], sae=None,
                     max_tokens: int = 256) -> Iterator[tuple[int, list[int], dict[str, np.ndarray]]]:
    """Per text: ``(index, token ids, {point: [L, U] float32})``; with an ``sae``, its latents ``[L, d_sae]``
    under the key ``"sae"`` (computed from its own hook point, which is captured too). Texts longer
    than ``max_tokens`` tokens are cut there."""
    capture = list(dict.fromkeys([*points, *([sae.cfg.hook_point] if sae is not None else [])]))
    with hooked(model, capture=capture) as hooks:
        for index, text in enumerate(texts):
            tokens = list(tokenizer.encode(text))[:max_tokens]
            if not tokens:
                raise SuperpositionError(f"text {index} tokenizes to nothing: {text!r}")
            model(mx.array([tokens]))
            acts = {p: hooks.recorder.stack(p)[0] for p in capture}  # [L, U] each
            if sae is not None:
                acts[SAE_KIND] = sae.encode(acts[sae.cfg.hook_point])  # [L, d_sae]
            mx.eval(list(acts.values()))
            yield index, tokens, {k: np.array(v.astype(mx.float32)) for k, v in acts.items()
                                  if k in points or k == SAE_KIND}


def pool(acts: np.ndarray, how: str) -> np.ndarray:
    """``[L, U]`` → ``[U]``: the mean over positions 1.. (``mean``) or the last position (``last``)."""
    if how == "last":
        return acts[-1]
    if how == "mean":
        return acts[1:].mean(axis=0) if acts.shape[0] > 1 else acts[0]
    raise SuperpositionError(f"unknown pooling {how!r} (choose mean or last)")


def pooled_activations(model, tokenizer, texts: Sequence[str], points: Sequence[str], sae=None, how: str = "mean",
                       on_text: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """``{point (and "sae"): [N texts, U]}``, each text pooled with :func:`pool`."""
    rows: dict[str, list[np.ndarray]] = {}
    for index, _, acts in text_activations(model, tokenizer, texts, points, sae):
        for key, value in acts.items():
            rows.setdefault(key, []).append(pool(value, how))
        if on_text is not None:
            on_text(index + 1, len(texts))
    return {key: np.stack(value).astype(np.float32) for key, value in rows.items()}


__all__ = ["POINT_KINDS", "SAE_KIND", "points_of", "pool", "pooled_activations", "text_activations"]
