"""Probes of an animal preference: sampled answers (the published metric) and exact logits.

- :func:`sampled_probe`: ``samples_per_question`` answers per question at temperature T,
  scored 1 when the lower-cased answer contains the animal (substring, as published);
  a question's score is the fraction of its answers, the probe's the mean over questions
  with a 95% CI (:mod:`.stats`).
- :func:`logit_probe`: no sampling: the probability that the answer's first word *is*
  the animal — P(the answer starts with the animal's tokens) × P(the next token does not
  continue the word) — summed over the spellings in ``variants`` (owl, Owl, owls, Owls).
  "Does not continue the word" means the next token's text starts with a non-letter
  (space, punctuation, end of turn). That makes the candidates disjoint events, so their
  probabilities sum to ≤ 1 per question, and "cat" never collects "caterpillar".

Both run one prefill per question and copy its KV cache across the batch (every row
shares the prompt), so N samples cost one prompt plus N short decodes — which is why
they do not go through the teachers' general batched generator (``numbers.py``), whose
rows all have different prompts.

Probes take an optional ``system_prompt`` and engine ``interventions`` (a steering
preset), so the same code probes a teacher, a base model and a student.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from .questions_io import DEFAULT_ANIMALS, load_questions, numbers_prefixed  # noqa: F401  (public here)
from .stats import mean_ci

VARIANTS = ("{a}", "{A}", "{a}s", "{A}s")
"""Spellings of a candidate counted by the logit probe ({a}: lower case, {A}: capitalised)."""


@dataclass
class ProbeResult:
    """Per-question scores of each animal, and their means over questions with 95% CIs."""

    kind: str
    """``sampled`` or ``logit``."""
    animals: list[str]
    questions: list[str]
    per_question: dict[str, list[float]]
    """animal → one value per question (fraction of answers naming it, or its probability)."""
    summary: dict[str, dict] = field(default_factory=dict)
    """animal → {mean, low, high, n, sd, confidence}."""
    settings: dict = field(default_factory=dict)
    answers: list[list[str]] | None = None
    """Sampled probe only: the raw answers per question."""

    def __post_init__(self):
        if not self.summary:
            self.summary = {a: mean_ci(v).to_json() for a, v in self.per_question.items()}

    def mean(self, animal: str) -> float:
        return float(self.summary[animal]["mean"])

    def to_json(self) -> dict:
        return {"kind": self.kind, "animals": self.animals, "questions": self.questions,
                "per_question": self.per_question, "summary": self.summary, "settings": self.settings,
                "answers": self.answers}

    @classmethod
    def from_json(cls, data: dict) -> "ProbeResult":
        return cls(data["kind"], list(data["animals"]), list(data["questions"]),
                   {k: list(v) for k, v in data["per_question"].items()}, dict(data.get("summary") or {}),
                   dict(data.get("settings") or {}), data.get("answers"))


def score_answer(answer: str, animal: str) -> bool:
    """The published scoring: the lower-cased answer contains the animal name."""
    return animal.lower() in answer.lower()


def prompt_tokens(tokenizer, question: str, system_prompt: str | None = None) -> list[int]:
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return list(tokenizer.encode("\n".join(m["content"] for m in messages) + "\n"))


def _log_softmax(x: mx.array) -> mx.array:
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


def _hooks(model, interventions):
    if not interventions:
        return nullcontext()
    from mlx_hooks.hooks import hooked

    return hooked(model, interventions=interventions)


def _prefill(model, tokens: list[int]):
    """Run the prompt once: (last-position logits [V] float32, its KV cache)."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array(tokens)[None], cache=cache)  # [1, L, V]
    return logits[0, -1].astype(mx.float32), cache


def _copy_cache(model, cache, tokens: list[int], rows: int):
    """``rows`` copies of a prefilled cache. Plain KV caches are copied; other cache types
    (sliding windows, SSM states) are rebuilt by prefilling the prompt ``rows`` times."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    if all(type(c) is KVCache for c in cache):
        copies = []
        for c in cache:
            keys, values, offset = c.state
            fresh = KVCache()
            fresh.state = (mx.repeat(keys[..., :offset, :], rows, axis=0),  # [rows, H, L, d]
                           mx.repeat(values[..., :offset, :], rows, axis=0), offset)
            copies.append(fresh)
        return copies
    copies = make_prompt_cache(model)
    model(mx.repeat(mx.array(tokens)[None], rows, axis=0), cache=copies)
    return copies


_WORD_END: dict[int, np.ndarray] = {}


def word_end_mask(tokenizer, vocab_size: int) -> np.ndarray:
    """[V] bool: the token's text starts with a non-letter (or is empty/special): it ends a word."""
    key = id(tokenizer)
    if key not in _WORD_END:
        n = min(len(tokenizer), vocab_size) if hasattr(tokenizer, "__len__") else vocab_size
        texts = tokenizer.batch_decode([[i] for i in range(n)]) if hasattr(tokenizer, "batch_decode") else \
            [tokenizer.decode([i]) for i in range(n)]
        mask = np.ones(vocab_size, dtype=bool)
        mask[:n] = [not (t[:1].isalpha()) for t in texts]
        _WORD_END[key] = mask
    return _WORD_END[key]


def _vocab_size(model, tokenizer) -> int:
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    if size:
        return int(size)
    logits = model(mx.array([[0]]))
    return int(logits.shape[-1])


def spellings(animal: str, variants: Sequence[str] = VARIANTS) -> list[str]:
    out = []
    for v in variants:
        s = v.format(a=animal.lower(), A=animal[:1].upper() + animal[1:].lower())
        if s not in out:
            out.append(s)
    return out


def logit_probe(
    loaded,
    questions: Sequence[str],
    animals: Sequence[str] = DEFAULT_ANIMALS,
    *,
    variants: Sequence[str] = VARIANTS,
    system_prompt: str | None = None,
    interventions=None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """Exact probability that the answer's first word is each animal, per question (see module doc)."""
    model, tok = loaded.model, loaded.tokenizer
    rows = [(a, s, list(tok.encode(s, add_special_tokens=False))) for a in animals for s in spellings(a, variants)]
    # one batch row per token sequence that is not a prefix of another ("owl" rides along
    # with "owl"+"s"): a row's logits at every position serve all its prefixes
    seqs = sorted({tuple(ids) for _, _, ids in rows}, key=len, reverse=True)
    unique: list[tuple[int, ...]] = []
    for seq in seqs:
        if not any(u[: len(seq)] == seq for u in unique):
            unique.append(seq)
    row_of = [next(j for j, u in enumerate(unique) if u[: len(ids)] == tuple(ids)) for _, _, ids in rows]
    width = max(len(u) for u in unique)
    batch = np.zeros((len(unique), width), dtype=np.int32)  # right-padded: padding never feeds a read position
    for j, seq in enumerate(unique):
        batch[j, : len(seq)] = seq
    batch_mx = ids_mx = mx.array(batch)
    ends_mx = mx.array(word_end_mask(tok, _vocab_size(model, tok)).astype(np.float32))  # [V]
    per_question: dict[str, list[float]] = {a: [] for a in animals}
    with _hooks(model, interventions):
        for qi, question in enumerate(questions):
            if should_stop is not None and should_stop():
                break
            tokens = prompt_tokens(tok, question, system_prompt)
            first, cache = _prefill(model, tokens)
            logits = model(batch_mx, cache=_copy_cache(model, cache, tokens, len(unique)))  # [R, W, V]
            logp = mx.concatenate([mx.broadcast_to(_log_softmax(first)[None, None], (len(unique), 1, first.shape[-1])),
                                   _log_softmax(logits.astype(mx.float32))], axis=1)  # [R, W+1, V]
            # only small arrays leave the device: the chosen tokens' log-probs and the word-end mass
            token_logp = mx.take_along_axis(logp[:, :width], ids_mx[..., None], axis=-1)[..., 0]  # [R, W]
            end_mass = (mx.exp(logp) * ends_mx).sum(axis=-1)  # [R, W+1]
            token_logp, end_mass = np.array(token_logp), np.array(end_mass)
            totals = dict.fromkeys(animals, 0.0)
            for (animal, _, ids), j in zip(rows, row_of):
                lp = float(token_logp[j, : len(ids)].sum())  # log P(tokens | prompt)
                totals[animal] += math.exp(lp) * min(float(end_mass[j, len(ids)]), 1.0)
            for animal in animals:
                per_question[animal].append(totals[animal])
            if on_progress is not None:
                on_progress(qi + 1, len(questions))
    done = len(next(iter(per_question.values()))) if per_question else 0
    return ProbeResult("logit", list(animals), list(questions[:done]), per_question,
                       settings={"variants": list(variants), "system_prompt": system_prompt,
                                 "interventions": bool(interventions)})


def sampled_probe(
    loaded,
    questions: Sequence[str],
    animals: Sequence[str] = DEFAULT_ANIMALS,
    *,
    samples_per_question: int = 100,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 50,
    max_tokens: int = 8,
    system_prompt: str | None = None,
    interventions=None,
    keep_answers: bool = True,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ProbeResult:
    """The published metric: fraction of sampled answers containing each animal, per question."""
    from mlx_lm.sample_utils import make_sampler

    model, tok = loaded.model, loaded.tokenizer
    sampler = make_sampler(temp=temperature)
    stops = set(getattr(tok, "eos_token_ids", None) or [tok.eos_token_id])
    per_question: dict[str, list[float]] = {a: [] for a in animals}
    all_answers: list[list[str]] = []
    with _hooks(model, interventions):
        for qi, question in enumerate(questions):
            if should_stop is not None and should_stop():
                break
            mx.random.seed(seed * 100_003 + qi)  # per question: a question's answers do not depend on the others
            tokens = prompt_tokens(tok, question, system_prompt)
            first, cache = _prefill(model, tokens)
            answers: list[str] = []
            while len(answers) < samples_per_question:
                rows = min(batch_size, samples_per_question - len(answers))
                batch_cache = _copy_cache(model, cache, tokens, rows)
                logprobs = mx.broadcast_to(_log_softmax(first)[None], (rows, first.shape[-1]))
                out = np.zeros((rows, max_tokens), dtype=np.int64)
                done = np.zeros(rows, dtype=bool)
                length = np.full(rows, max_tokens)
                for step in range(max_tokens):
                    y = sampler(logprobs)  # [rows]
                    ids = np.array(y)
                    out[:, step] = ids
                    finished = np.isin(ids, list(stops)) & ~done
                    length[finished] = step
                    done |= finished
                    if done.all() or step == max_tokens - 1:
                        break
                    logits = model(y[:, None], cache=batch_cache)  # [rows, 1, V]
                    logprobs = _log_softmax(logits[:, -1].astype(mx.float32))
                answers.extend(tok.decode(out[r, : length[r]].tolist()) for r in range(rows))
            for animal in animals:
                per_question[animal].append(float(np.mean([score_answer(a, animal) for a in answers])))
            all_answers.append(answers)
            if on_progress is not None:
                on_progress(qi + 1, len(questions))
    return ProbeResult("sampled", list(animals), list(questions[: len(all_answers)]), per_question,
                       settings={"samples_per_question": samples_per_question, "temperature": temperature,
                                 "seed": seed, "max_tokens": max_tokens, "system_prompt": system_prompt,
                                 "interventions": bool(interventions)},
                       answers=all_answers if keep_answers else None)
