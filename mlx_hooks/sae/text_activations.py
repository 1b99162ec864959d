"""One hook point's activations over a list of texts, in memory-bounded batches.

Feature records, contrast search and evaluation all need the same thing: run texts
through the hooked model and get each real token's activation at the SAE's point,
with where it came from (which text, which token). Each text is tokenized on its
own and cut into windows of ``max_seq_len`` tokens; windows are right-padded into
batches (causal attention: padding after a token never reaches it) and the padding
is dropped again.

The first position of every window is skipped by default: the first token of a
context carries an outsized "attention sink" residual that no later position
resembles (the SAE trainer drops it too), and it would crowd every latent's top
contexts.

Only the captured activation is evaluated: MLX builds the rest of the forward lazily
and never computes the layers after the hook point, nor the unembedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..hooks import hooked


@dataclass(frozen=True)
class ActivationBatch:
    """Activations of real (unpadded, kept) tokens, flattened over the batch."""

    acts: mx.array
    """``[N, D]`` float32 activations at the hook point."""
    tokens: np.ndarray
    """``[N]`` token ids."""
    text_index: np.ndarray
    """``[N]`` index of the text each token belongs to."""
    position: np.ndarray
    """``[N]`` index of the token within its text's token list."""


def tokenize_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's own special tokens, e.g. BOS)."""
    return [list(tokenizer.encode(text)) for text in texts]


def windows_of(token_lists: Sequence[Sequence[int]], max_seq_len: int) -> list[tuple[int, int, list[int]]]:
    """``(text_index, start, tokens)`` windows of at most ``max_seq_len`` tokens, in text order."""
    out = []
    for index, tokens in enumerate(token_lists):
        for start in range(0, len(tokens), max_seq_len):
            piece = list(tokens[start : start + max_seq_len])
            if piece:
                out.append((index, start, piece))
    return out


def iter_text_activations(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    point: str,
    *,
    max_seq_len: int = 128,
    tokens_per_batch: int = 2048,
    skip_first: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[ActivationBatch]:
    """Batches of ``point``'s activations over the tokenized texts (see the module docstring)."""
    if max_seq_len < 2 and skip_first:
        raise ValueError("max_seq_len must be at least 2 when the first position of each window is skipped")
    windows = windows_of(token_lists, max_seq_len)
    rows = max(1, tokens_per_batch // max_seq_len)
    for begin in range(0, len(windows), rows):
        if should_stop is not None and should_stop():
            return
        group = windows[begin : begin + rows]
        length = max(len(w[2]) for w in group)
        ids = np.zeros((len(group), length), dtype=np.int32)  # right padding with token 0, dropped below
        keep = np.zeros((len(group), length), dtype=bool)
        text_index = np.zeros((len(group), length), dtype=np.int64)
        position = np.zeros((len(group), length), dtype=np.int64)
        for row, (index, start, tokens) in enumerate(group):
            ids[row, : len(tokens)] = tokens
            keep[row, int(skip_first) : len(tokens)] = True
            text_index[row] = index
            position[row] = start + np.arange(length)
        flat_keep = np.flatnonzero(keep.reshape(-1))
        if flat_keep.size == 0:
            continue
        with hooked(model, capture=[point]) as session:
            model(mx.array(ids))  # lazy: only what the capture needs is ever computed
            acts = session.recorder.stack(point)  # [B, L, D]
        acts = acts.reshape(-1, acts.shape[-1])[mx.array(flat_keep)].astype(mx.float32)  # [N, D]
        mx.eval(acts)
        yield ActivationBatch(
            acts=acts, tokens=ids.reshape(-1)[flat_keep].astype(np.int64),
            text_index=text_index.reshape(-1)[flat_keep], position=position.reshape(-1)[flat_keep],
        )


def tokens_per_batch_for(budget_bytes: int, d_in: int, d_sae: int, max_seq_len: int) -> int:
    """Tokens per batch that keep one batch's arrays within ``budget_bytes`` (approximate).

    Per token: the activation, the SAE's pre-activations and latents (float32), the
    reconstruction, and about eight residual-width intermediates of the model's forward.
    """
    per_token = 4 * (2 * d_in + 3 * d_sae + 8 * d_in)
    return int(min(max(budget_bytes // per_token, max_seq_len), 16384))
