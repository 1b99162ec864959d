"""The mechanism view: did fine-tuning move the student along the teacher's trait direction?

Two directions per layer, each a mean residual-stream difference at the position where
the answer starts (the last prompt token, after the chat template's assistant header):

- the student's update: mean over probe prompts of resid_post(student) − resid_post(base);
- the teacher's trait: mean of resid_post(base with the trait: system prompt or preset)
  − resid_post(base without it), over the same prompts.

Their cosine per layer says how far the student's change points along the trait (the
follow-up work found subliminal transfer behaves like distilling a steering vector).
A student whose LoRA is still attached gives the base too: :func:`lora_disabled` sets
every LoRA scale to 0 for the ``with`` block.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import mlx.core as mx
import numpy as np

from .probes import prompt_tokens


def residual_means(
    loaded,
    prompts: Sequence[str],
    *,
    interventions=None,
    system_prompt: str | None = None,
    position: str = "last",
) -> np.ndarray:
    """Mean residual stream after each decoder layer over ``prompts``: ``[layers, D]`` float64.

    ``position``: ``last`` (the last prompt token, where the answer is produced) or
    ``mean`` (each prompt's mean over the user turn's tokens; not comparable across
    system prompts, whose token counts differ).
    """
    from mlx_hooks.hooks import hooked

    if position not in ("last", "mean"):
        raise ValueError(f"position {position!r}: use last or mean")
    if not prompts:
        raise ValueError("residual_means needs at least one prompt")
    model, tok = loaded.model, loaded.tokenizer
    n_layers = len(model.layers)
    points = [f"resid_post.{i}" for i in range(n_layers)]
    total = None
    with hooked(model, capture=points, interventions=interventions) as session:
        for prompt in prompts:
            session.recorder.clear()
            tokens = prompt_tokens(tok, prompt, system_prompt)
            model(mx.array(tokens)[None])
            stacked = mx.stack([session.recorder.stack(p)[0] for p in points])  # [layers, L, D]
            vec = stacked[:, -1] if position == "last" else stacked.mean(axis=1)  # [layers, D]
            vec = np.array(vec.astype(mx.float32), dtype=np.float64)
            total = vec if total is None else total + vec
        session.recorder.clear()
    return total / len(prompts)


def direction_cosines(student_minus_base: np.ndarray, trait_minus_plain: np.ndarray) -> np.ndarray:
    """Cosine per layer between two ``[layers, D]`` directions (NaN where either is zero)."""
    a = np.asarray(student_minus_base, dtype=np.float64)
    b = np.asarray(trait_minus_plain, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"direction_cosines needs two [layers, D] arrays of one shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(axis=1) / (na * nb)
    cos[(na == 0) | (nb == 0)] = np.nan
    return np.clip(cos, -1.0, 1.0)


@contextmanager
def lora_disabled(model) -> Iterator[None]:
    """The base model's behaviour from a model carrying LoRA layers (scale 0 while inside)."""
    from mlx_lm.tuner.lora import LoRALinear

    layers = [m for _, m in model.named_modules() if isinstance(m, LoRALinear)]
    saved = [m.scale for m in layers]
    try:
        for m in layers:
            m.scale = 0.0
        yield
    finally:
        for m, s in zip(layers, saved):
            m.scale = s


def mechanism_view(
    student,
    prompts: Sequence[str],
    *,
    base=None,
    teacher_system_prompt: str | None = None,
    teacher_interventions=None,
) -> dict:
    """Cosines per layer between the student's update and the teacher's trait direction.

    ``base``: the base model; None = the student's own model with its LoRA disabled.
    The trait is a system prompt or interventions (a steering preset), applied to the base.
    """
    if teacher_system_prompt is None and not teacher_interventions:
        raise ValueError("mechanism_view needs the teacher's trait: a system prompt or interventions")
    if base is None:
        with lora_disabled(student.model):
            plain = residual_means(student, prompts)
            trait = residual_means(student, prompts, system_prompt=teacher_system_prompt,
                                   interventions=teacher_interventions)
    else:
        plain = residual_means(base, prompts)
        trait = residual_means(base, prompts, system_prompt=teacher_system_prompt,
                               interventions=teacher_interventions)
    moved = residual_means(student, prompts) - plain  # [layers, D]
    trait_dir = trait - plain
    cos = direction_cosines(moved, trait_dir)
    return {
        "cosine": [None if np.isnan(c) else float(c) for c in cos],
        "student_shift_norm": np.linalg.norm(moved, axis=1).tolist(),
        "trait_norm": np.linalg.norm(trait_dir, axis=1).tolist(),
        "n_prompts": len(prompts),
        "position": "last",
    }
