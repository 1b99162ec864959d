"""Teacher responses to number prompts: batched generation with mlx-lm's ``BatchGenerator``.

Batching is what makes a 30,000-prompt teacher run practical on any backend (see
``benchmarks/subliminal_batching.py``). Everything below the loop is mlx-lm's: the
batched KV cache, right-padded prefill, continuous batching (a finished row is
replaced by the next prompt), stop tokens. This module adds the teacher (system
prompt in the chat template, or a preset's interventions attached through the
engine's hooks, which see each row's own positions from the batched cache), per-
sequence random keys, cancellation, and results in order of completion so a caller
can append each to a file and skip finished indices when it resumes.

Determinism: at temperature > 0 every prompt samples with its own key, derived from
``(seed, prompt index)`` and split once per token, so a prompt's text does not depend
on which other prompts share its batch, on the batch size, or on resuming — as long
as the logits themselves are equal; batched matmuls may round differently from
unbatched ones, which can very rarely flip a sampled token.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlx_hooks.errors import ContextLengthError
from mlx_hooks.generate import context_length
from mlx_hooks.hooks import HookSession
from mlx_hooks.streams import generation_stream

from .constrained import make_logits_processors
from .teacher import TeacherSetup, TraitSpec, teacher_context

ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)`` after each finished response (``total`` excludes skipped prompts)."""


def sequence_key(seed: int, index: int) -> mx.array:
    """The random key of prompt ``index`` in a run with ``seed`` (independent of batching)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(1, np.uint64)[0]
    return mx.random.key(int(state))


def default_share_prefix(device: mx.Device | None = None) -> bool:
    """Whether batched teacher generation shares the prompts' common prefix by default: on the
    CPU backend only, by measurement (``benchmarks/subliminal_batching.py``, default model,
    batch 64 × 64 prompts). On the CPU the shared prefix made it 1.16× faster, with the same
    texts; on a GPU (MLX's CUDA backend, an H200) 1.07–1.26× slower in four runs (why is not
    examined). Metal is treated as the GPU it is (not measured)."""
    device = device or mx.default_device()
    return device.type != mx.gpu


def make_sequence_sampler(temperature: float, key: mx.array) -> Callable[[mx.array], mx.array]:
    """A sampler for one row (``[1, V]`` logprobs → ``[1]`` token) drawing from its own key stream."""
    inverse = 1.0 / temperature
    state = {"key": key}

    def sample(logprobs: mx.array) -> mx.array:
        key, sub = mx.random.split(state["key"])
        state["key"] = key
        return mx.random.categorical(logprobs * inverse, key=sub)

    return sample


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Prompt tokens of ``messages`` with the chat template (plain lines for template-less models).

    Templates that refuse a system role (Gemma's raises) get the system prompt at the top
    of the user turn instead, the usual workaround for those models.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        except Exception:  # noqa: BLE001 - jinja's TemplateError or the template's own raise_exception
            if not messages or messages[0]["role"] != "system":
                raise
            system, user = messages[0]["content"], messages[1]
            merged = [{"role": "user", "content": f"{system}\n\n{user['content']}"}, *messages[2:]]
            return list(tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=True))
    return list(tokenizer.encode("\n".join(m["content"] for m in messages) + "\n"))


def generate_responses(
    loaded,
    spec: TraitSpec,
    prompts: Sequence[str],
    *,
    batch_size: int = 32,
    max_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_progress: ProgressCallback | None = None,
    skip: Iterable[int] = (),
    teacher: TeacherSetup | None = None,
    share_prefix: bool | None = None,
    decoding: str = "free",
) -> Iterator[tuple[int, str]]:
    """Yield ``(prompt index, raw response text)`` as each response finishes.

    ``loaded``: a :class:`mlx_hooks.loader.LoadedModel` (or anything with ``model``,
    ``tokenizer`` and, for preset traits, ``fingerprint``). The prompt goes in the user
    turn of the chat template; the teacher's system prompt, when the trait is one, goes
    before it. ``temperature`` 0 decodes greedily. ``skip``: indices already done
    (resume). ``should_stop`` is polled once per decode step; when it returns True the
    generator stops (unfinished responses are dropped and will be redone on resume, with
    the same keys). ``teacher`` reuses a setup from :func:`teacher_context`.
    ``share_prefix``: run the tokens every prompt starts with (chat template header,
    system prompt) once and start each row from a copy of that KV cache; None chooses by
    backend (:func:`default_share_prefix`).
    ``decoding``: ``"free"`` (the published protocol), ``"constrained"`` (only digits,
    separators and end-of-sequence can be sampled) or ``"grammar"`` (only what keeps the
    text in the filter's format), see :mod:`.constrained`.
    The response text excludes the stop token and is not stripped (the filter judges it raw).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if share_prefix is None:
        share_prefix = default_share_prefix()
    if teacher is None:
        with teacher_context(spec, loaded) as setup:
            yield from _generate(loaded, setup, prompts, batch_size, max_tokens, temperature, seed, should_stop,
                                 on_progress, set(skip), share_prefix, decoding)
    else:
        yield from _generate(loaded, teacher, prompts, batch_size, max_tokens, temperature, seed, should_stop,
                             on_progress, set(skip), share_prefix, decoding)


def _generate(loaded, teacher: TeacherSetup, prompts, batch_size, max_tokens, temperature, seed, should_stop,
              on_progress, skip, share_prefix, decoding) -> Iterator[tuple[int, str]]:
    model, tokenizer = loaded.model, loaded.tokenizer
    todo = [i for i in range(len(prompts)) if i not in skip]
    total = len(todo)
    if not todo:
        return
    # checked before any work; the mask itself is sized to the logits on the first step
    row_processors = make_logits_processors(decoding, tokenizer)
    limit = context_length(model)
    # A thread-local stream on the default device of now: mlx-lm's own was made on the
    # default device of when it was imported (see mlx_hooks.streams).
    generator = BatchGenerator(
        model, max_tokens=max_tokens, stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=batch_size, prefill_batch_size=batch_size,
        stream=generation_stream(),
    )
    session = HookSession(model, interventions=teacher.interventions) if teacher.interventions else None
    uid_to_index: dict[int, int] = {}
    tokens: dict[int, list[int]] = {}
    queue = iter(todo)
    queued = 0  # inserted but not finished

    prefix: list[int] = []
    prefix_cache: list | None = None

    def shared_prefix() -> None:
        """Prefill the tokens every prompt starts with (needs the hooks attached)."""
        nonlocal prefix, prefix_cache
        # Two user turns that differ in their first character: what they share is the
        # template's header and the system prompt, whatever prompts this call is given,
        # so the split (and the arithmetic) is the same in every chunk and on resume.
        a, b = (encode_chat(tokenizer, teacher.messages(text)) for text in ("0", "1"))
        length = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        cache = make_prompt_cache(model)
        # Only plain KV caches can be copied per row and merged into a batch at any length.
        if length < 1 or not all(type(c) is KVCache for c in cache):
            return
        prefix = a[:length]
        model(mx.array(prefix)[None], cache=cache)
        mx.eval([c.state for c in cache])
        prefix_cache = cache

    def row_cache(ids: list[int]) -> tuple[list | None, list[int]]:
        if prefix_cache is None or ids[: len(prefix)] != prefix or len(ids) == len(prefix):
            return None, ids
        rows = []
        for layer in prefix_cache:  # a new cache object per row; the arrays are shared, never written
            copy = KVCache()
            copy.state = layer.state
            rows.append(copy)
        return rows, ids[len(prefix):]

    def refill() -> None:
        nonlocal queued
        batch_indices, batch_tokens, samplers, caches, processors = [], [], [], [], []
        while queued + len(batch_indices) < 2 * batch_size:
            index = next(queue, None)
            if index is None:
                break
            ids = encode_chat(tokenizer, teacher.messages(prompts[index]))
            if limit is not None and len(ids) + max_tokens > limit:
                raise ContextLengthError(f"prompt {index} ({len(ids)} tokens) plus {max_tokens} new tokens does not "
                                         f"fit the model's context length of {limit}")
            cache, ids = row_cache(ids)
            batch_indices.append(index)
            batch_tokens.append(ids)
            caches.append(cache)
            processors.append(row_processors())
            samplers.append(None if temperature == 0 else make_sequence_sampler(temperature, sequence_key(seed, index)))
        if batch_indices:
            # None rows fall back to the generator's (batched, greedy) sampler.
            uids = generator.insert(batch_tokens, caches=caches, samplers=samplers if temperature > 0 else None,
                                    logits_processors=processors)
            for uid, index in zip(uids, batch_indices):
                uid_to_index[uid] = index
                tokens[uid] = []
            queued += len(batch_indices)

    done = 0
    try:
        with (session.attached() if session is not None else _nothing()):
            if share_prefix:
                shared_prefix()
            refill()
            while queued:
                responses = generator.next_generated()
                if not responses:
                    break
                for response in responses:
                    if response.finish_reason != "stop":
                        tokens[response.uid].append(response.token)
                    if response.finish_reason is not None:
                        text = tokenizer.decode(tokens.pop(response.uid))
                        queued -= 1
                        done += 1
                        yield uid_to_index.pop(response.uid), text
                        if on_progress is not None:
                            on_progress(done, total)
                if should_stop is not None and should_stop():
                    return
                refill()
    finally:
        generator.close()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
