"""Hooked streaming generation: mlx-lm's ``stream_generate`` with hooks attached,
turned into a stream of small frozen step records.

Generation, sampling and the KV cache are mlx-lm's; this module adds what an
instrument needs per token: the chosen token's probability, the entropy (bits) of the
raw and of the sampling distribution, the top-k alternatives, the captured
activations of the position that produced the token, and the output of any
"readers" (e.g. SAE feature meters) run on those activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.generate import stream_generate
from mlx_lm.models.cache import make_prompt_cache

from .activation_cache import ActivationRecorder, CacheConfig
from .architectures import dims_of
from .errors import ContextLengthError
from .hooks import HookSession
from .interventions import Intervention
from .distribution import entropy_bits, top_indices
from .sampling import SamplingSettings
from .streams import generation_stream

Reader = Callable[[Mapping[str, mx.array]], Any]
"""Runs on the engine thread with one step's activations (``[D]`` per point); returns plain values."""


@dataclass(frozen=True)
class TokenAlternative:
    token: int
    prob: float
    """Probability under the model's raw (temperature-1, unfiltered) distribution."""
    text: str


@dataclass(frozen=True)
class GenerationStep:
    """One generated token and what the instrument saw while choosing it."""

    index: int
    """0-based index among this generation's tokens."""
    position: int
    """Absolute position of the token in the sequence (prompt starts at 0)."""
    token: int
    text: str
    """Text piece this token completes (may be empty mid-way through a multi-byte character)."""
    prob: float
    """Probability the model gave the chosen token (raw distribution)."""
    sampling_prob: float
    """Probability of the chosen token under the distribution actually sampled."""
    entropy: float
    """Entropy (bits) of the sampling distribution (after temperature and filters)."""
    raw_entropy: float
    """Entropy (bits) of the model's raw next-token distribution."""
    top_k: tuple[TokenAlternative, ...]
    """Most likely tokens under the raw distribution, best first."""
    activations: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Captured activations at ``position - 1`` (the position whose output chose this token), ``[D]`` float32."""
    readings: Mapping[str, Any] = field(default_factory=dict)
    """Outputs of the readers, by reader name."""
    finish_reason: str | None = None
    """``"stop"`` (end-of-sequence token), ``"length"`` (max tokens) or None while going on."""
    generation_tps: float = 0.0
    prompt_tokens: int = 0
    logprobs: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The raw next-token log-probabilities (float32 ``[V]``), only with ``keep_logprobs=True``."""


def context_length(model: nn.Module) -> int | None:
    """The model's trained context length (from its architecture entry), if known."""
    return dims_of(model).context_length


def encode_prompt(tokenizer, prompt: str | Sequence[int]) -> list[int]:
    if isinstance(prompt, str):
        bos = getattr(tokenizer, "bos_token", None)
        return list(tokenizer.encode(prompt, add_special_tokens=bos is None or not prompt.startswith(bos)))
    return [int(t) for t in prompt]


def hooked_stream_generate(
    model: nn.Module,
    tokenizer,
    prompt: str | Sequence[int],
    *,
    max_tokens: int = 256,
    sampling: SamplingSettings = SamplingSettings(),
    capture: Iterable[str] = (),
    interventions: Mapping[str, Sequence[Intervention] | Intervention] | None = None,
    recorder: ActivationRecorder | None = None,
    cache_config: CacheConfig | None = None,
    prompt_cache: list | None = None,
    top_k: int = 5,
    readers: Mapping[str, Reader] | None = None,
    step_activations: bool = True,
    should_stop: Callable[[], bool] | None = None,
    session_out: list | None = None,
    keep_logprobs: bool = False,
) -> Iterator[GenerationStep]:
    """Stream a generation with hooks attached; see :class:`GenerationStep`.

    ``prompt_cache`` (mlx-lm KV cache) may already hold earlier tokens: ``prompt`` then
    holds only the new ones and positions continue from the cache's offset.
    ``should_stop`` is polled between steps (cancellation). The hooks are removed when
    the generator finishes, is closed, or raises. ``session_out``, if given, receives
    the :class:`HookSession` (to change interventions between steps). ``keep_logprobs``
puts each step's raw log-probabilities (float32 ``[V]``) in ``step.logprobs`` (for a
temperature view that re-samples the distribution without re-running the model).
    """
    tokens = encode_prompt(tokenizer, prompt)
    if not tokens:
        raise ValueError("empty prompt")
    if prompt_cache is None:
        prompt_cache = make_prompt_cache(model)
    offset = int(getattr(prompt_cache[0], "offset", 0)) if prompt_cache else 0
    limit = context_length(model)
    if limit is not None and offset + len(tokens) >= limit:
        raise ContextLengthError(
            f"prompt of {offset + len(tokens)} tokens does not fit the model's context length of {limit}"
        )
    if limit is not None:
        room = limit - offset - len(tokens)
        max_tokens = room if max_tokens < 0 else min(max_tokens, room)
    prompt_end = offset + len(tokens)
    session = HookSession(model, capture, interventions, recorder, cache_config, prompt_length=prompt_end)
    session.watch_finite = True
    if session_out is not None:
        session_out.append(session)
    if sampling.seed is not None:
        mx.random.seed(sampling.seed)
    wants_activations = bool(session.capture_points) and (step_activations or readers)
    session.keep_last_position = wants_activations
    # Where each captured point sits in a step's row, fixed for the whole generation.
    slices, end = {}, 0
    for point in session.row_points:
        slices[point] = slice(end, end + session.adapter.width(point))
        end = slices[point].stop

    pieces: dict[int, str] = {}  # token id -> its text alone, for the top-k alternatives

    with session.attached():
        responses = stream_generate(
            model, tokenizer, mx.array(tokens), max_tokens=max_tokens,
            sampler=sampling.make_sampler(), prompt_cache=prompt_cache,
            stream=generation_stream(),  # the default device now, not when mlx-lm was imported
            logits_processors=_Float32Logits().processors,
        )
        for index, response in enumerate(responses):
            position = prompt_end + index
            row = session.last_position_row(position - 1) if wants_activations else None  # [B, 1, sum of widths]
            session.check_finite()  # an intervention that broke the numbers stops here, not as garbage text
            step = _make_step(
                index, position, response, tokenizer, sampling, top_k,
                _StepActivations(session, position - 1, row, slices) if wants_activations else None,
                step_activations, readers, keep_logprobs, pieces,
            )
            session.recorder.settle()
            yield step
            if step.finish_reason is not None or (should_stop is not None and should_stop()):
                break


class _Float32Logits:
    """Upcast the logits inside the step's own graph, so the log-probabilities arrive in float32.

    Why here and not after the step: mlx-lm queues the next forward (``async_eval``) before it
    hands over this step's log-probabilities. An ``astype`` made afterwards is queued behind
    that next forward, so reading it waited for a whole step: on a GPU (MLX's CUDA backend,
    an H200, 1B shape in bfloat16) hooked generation with nothing captured ran at 0.51× plain.
    Upcasting before the log-softmax also makes the shown probabilities and entropy float32.
    Greedy choices are unchanged (the upcast keeps the order of the logits).

    Logits already in float32 need nothing, so the processor then empties :attr:`processors`, the
    very list handed to mlx-lm: mlx-lm tests that list before every step, and while it holds a
    processor it also keeps the whole token history for it (a concatenate per step). Were a future
    mlx-lm to copy the list, the processor would simply stay, passing float32 logits through.
    """

    def __init__(self):
        self.processors: list = [self]

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:  # [B, V] -> [B, V] float32
        if logits.dtype == mx.float32:
            self.processors.clear()
            return logits
        return logits.astype(mx.float32)


class _StepActivations:
    """The captured points at one position, as MLX arrays for readers and as host arrays for the step."""

    def __init__(self, session: HookSession, position: int, row: mx.array | None, slices: dict[str, slice]):
        self.session, self.position, self.row, self.slices = session, position, row, slices

    def mlx(self) -> dict[str, mx.array]:  # point -> [D]
        return {p: self.session.recorder.at(p, self.position)[0] for p in self.session.row_points}

    def host(self) -> dict[str, np.ndarray]:  # point -> [D] float32
        if isinstance(self.row, list):  # a float32 decode step: the points' own [B, 1, D_p] arrays
            host = np.concatenate(self.row, axis=-1)[0, 0]  # [sum of widths]; one host copy, no MLX op
        elif self.row is not None:
            host = np.array(self.row)[0, 0]  # [sum of widths]; evaluated with its forward
        else:  # no row kept for this position: one transfer of the recorder's arrays
            flat = mx.concatenate([a.reshape(-1) for a in self.mlx().values()])
            host = np.array(flat if flat.dtype == mx.float32 else flat.astype(mx.float32))
        return {p: host[where] for p, where in self.slices.items()}  # [D_p] views of the row


def _piece(tokenizer, token: int, pieces: dict[int, str]) -> str:
    """The text of one token alone, decoded once per generation: the same few alternatives come back
    step after step, and a tokenizer's ``decode`` costs more than the rest of the step's statistics."""
    text = pieces.get(token)
    if text is None:
        text = pieces[token] = tokenizer.decode([token])
    return text


def _make_step(index, position, response, tokenizer, sampling, top_k, step_acts, step_activations, readers,
               keep_logprobs: bool, pieces: dict[int, str]):
    # The step's statistics are computed in numpy: mlx-lm already evaluated the logprobs,
    # and a dozen MLX ops over the vocabulary would cost more than the hooks themselves.
    raw = response.logprobs  # [V], raw, normalised
    # float32, as the model gave them: a float64 copy of a 32k-256k vocabulary per token
    # cost more than the hooks.
    logprobs = np.array(raw if raw.dtype == mx.float32 else raw.astype(mx.float32))
    token = int(response.token)
    raw_entropy = float(entropy_bits(logprobs))
    if sampling.greedy:
        sampling_prob, entropy = 1.0, 0.0
    else:
        sampled = sampling.sampling_logprobs(logprobs)  # [V]
        sampling_prob, entropy = float(np.exp(sampled[token])), float(entropy_bits(sampled))
    ids = top_indices(logprobs, min(top_k, logprobs.shape[-1]))
    alternatives = tuple(TokenAlternative(i, math.exp(logprobs[i]), _piece(tokenizer, i, pieces)) for i in ids.tolist())
    readings = {}
    if readers:
        activations_mx = step_acts.mlx() if step_acts is not None else {}
        readings = {name: reader(activations_mx) for name, reader in readers.items()}
    activations = step_acts.host() if step_acts is not None and step_activations else {}
    return GenerationStep(
        index=index, position=position, token=token, text=response.text,
        prob=math.exp(logprobs[token]), sampling_prob=sampling_prob, entropy=max(entropy, 0.0) + 0.0,
        raw_entropy=max(raw_entropy, 0.0) + 0.0, top_k=alternatives, activations=activations, readings=readings,
        finish_reason=response.finish_reason, generation_tps=float(response.generation_tps),
        prompt_tokens=int(response.prompt_tokens),
        logprobs=logprobs if keep_logprobs else None,
    )
