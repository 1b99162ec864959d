"""Asking models for answers: batched greedy (or sampled) replies, answer log-probabilities,
and a LoRA's scale turned (task-vector negation: scale × −1).

Replies go through the subliminal lab's batched generator (:func:`..subliminal.numbers.generate_responses`,
mlx-lm's ``BatchGenerator``) with a plain teacher setup; steering is its ``interventions``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from mlx_hooks.errors import SymbiontError

from ..subliminal.numbers import encode_chat, generate_responses
from ..subliminal.teacher import TeacherSetup, TraitSpec


class Stopped(SymbiontError):
    """Generation was asked to stop before every reply was made."""


def replies(loaded, user_texts: Sequence[str], *, max_tokens: int, batch_size: int, temperature: float = 0.0,
            seed: int = 0, interventions: dict | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[str]:
    """One reply per user turn (in order); greedy at temperature 0. Raises :class:`Stopped` when cancelled."""
    setup = TeacherSetup(TraitSpec("none"), None, dict(interventions or {}))
    out: dict[int, str] = {}
    for index, text in generate_responses(loaded, setup.spec, list(user_texts), batch_size=batch_size,
                                          max_tokens=max_tokens, temperature=temperature, seed=seed,
                                          should_stop=should_stop, teacher=setup):
        out[index] = text
    if len(out) != len(user_texts):
        raise Stopped(f"stopped after {len(out)} of {len(user_texts)} replies")
    return [out[i] for i in range(len(user_texts))]


def answer_logprobs(loaded, user_texts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """log P(answer | user turn) summed over the answer's tokens, per pair: ``[N]`` float64."""
    model, tok = loaded.model, loaded.tokenizer
    rows = []
    for text, answer in zip(user_texts, answers):
        prompt = encode_chat(tok, [{"role": "user", "content": text}])
        rows.append((prompt, list(tok.encode(answer, add_special_tokens=False))))
    out = np.zeros(len(rows))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        seqs = [p + a for p, a in chunk]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int32)  # right-padded; padding is never scored
        mask = np.zeros((len(seqs), width - 1), dtype=np.float32)
        for r, ((p, a), s) in enumerate(zip(chunk, seqs)):
            ids[r, :len(s)] = s
            mask[r, len(p) - 1:len(s) - 1] = 1.0  # targets at positions len(p)..len(s)-1
        logits = model(mx.array(ids[:, :-1])).astype(mx.float32)  # [B, L-1, V]
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        picked = mx.take_along_axis(logp, mx.array(ids[:, 1:])[..., None], axis=-1)[..., 0]  # [B, L-1]
        out[start:start + len(chunk)] = np.array((picked * mx.array(mask)).sum(axis=1), dtype=np.float64)
    return out


def lora_layers(model) -> list:
    from mlx_lm.tuner.lora import LoRALinear

    return [m for _, m in model.named_modules() if isinstance(m, LoRALinear)]


@contextmanager
def lora_scaled(model, factor: float) -> Iterator[None]:
    """Every LoRA layer's scale multiplied by ``factor`` inside the block (−1: the adapter's update
    negated, W + s·BA → W − s·BA; 0: the base model)."""
    layers = lora_layers(model)
    if not layers:
        raise SymbiontError("lora_scaled: the model carries no LoRA layers")
    saved = [m.scale for m in layers]
    try:
        for m, s in zip(layers, saved):
            m.scale = s * factor
        yield
    finally:
        for m, s in zip(layers, saved):
            m.scale = s


__all__ = ["Stopped", "answer_logprobs", "lora_layers", "lora_scaled", "replies"]
