"""Effective information of an intervention: Hoel, Albantakis & Tononi (2013), with bootstrap CIs.

Set a system's units by intervention to each of n states, drawn uniformly (the maximum-entropy
intervention distribution), and record what the system does next: a transition probability
matrix (TPM) ``T[s, o] = P(output o | do(state s))``. Then, in bits:

- ``EI = H(mean row) − mean H(row)``: the mutual information between the intervention and
  the output under uniform interventions;
- ``determinism = log2 n − mean H(row)``: how reliably each state leads to one output;
- ``degeneracy = log2 n − H(mean row)``: how much different states lead to the same output;
- ``EI = determinism − degeneracy``; ``effectiveness = EI / log2 n`` (1 for a permutation).

An identity TPM over n states has EI = log2 n; a TPM whose rows are all equal has EI = 0.
*Causal emergence*: a macro description (a coarse-graining, or another choice of units)
whose TPM has higher EI than the micro one.

Here the rows may have more or fewer output columns than states (a TPM from n intervention
states to a set of next tokens): EI is still the mutual information, and the identities
above hold with n the number of states (degeneracy can then be negative).

A model's TPM is measured over a set of prompts (the background conditions): for each
prompt, one row per state (:mod:`mlx_hooks.intervention_states` makes them). The prompts
combine in one of two ways (:data:`POOLINGS`): ``conditional``, each prompt's TPM on its own
and the measures averaged (what the states decide in a given context), or ``pooled``, one
TPM of the prompts' mean rows (only what a state does the same way in every context counts).
Resampling prompts with replacement gives bootstrap intervals
(:func:`bootstrap_ei`). They are *basic* (reverse-percentile) intervals by default: the pooled
plug-in EI of a resample is biased upwards (repeated prompts make the rows look more
deterministic), so the resamples' percentiles sit above the estimate (in a trial on the
grokking network, 96 prompts and 200 resamples, the 95% percentile interval of one scale lay
wholly above its own estimate at 7 of 8 checkpoints); reflecting them about the estimate
corrects that shift. Permuting the states independently within each prompt
(:func:`shuffle_states`) is the control for the pooled EI: it keeps every prompt's outputs but
destroys any effect of a state that is consistent across prompts (what remains is also the
finite-sample floor of the plug-in estimate). The conditional EI does not change under it (a
TPM's EI does not depend on the order of its rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import SymbiontError

ROW_SUM_TOLERANCE = 1e-4
"""A TPM row must sum to 1 within this (float32 softmax outputs sum to 1 ± a few ulp per entry)."""
MEASURES = ("ei_bits", "determinism", "degeneracy", "effectiveness")
"""The fields of :class:`EffectiveInformation` that intervals are given for."""


class EffectiveInformationError(SymbiontError, ValueError):
    """A transition matrix (or a stack of them) that is not one: wrong shape, negative, rows not summing to 1."""


@dataclass(frozen=True)
class EffectiveInformation:
    """Hoel's measures of one transition matrix, in bits."""

    ei_bits: float
    """EI = H(mean row) − mean H(row)."""
    determinism: float
    """log2 n − mean H(row)."""
    degeneracy: float
    """log2 n − H(mean row)."""
    effectiveness: float
    """EI / log2 n (NaN for a single state)."""
    n_states: int
    """Rows (intervention states) n."""
    n_outputs: int
    """Columns (distinct outputs)."""

    def to_dict(self) -> dict:
        return asdict(self)


def entropy_bits(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in bits along ``axis`` (0 · log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def check_tpm(tpm, what: str = "transition matrix") -> np.ndarray:
    """``tpm`` as a float64 ``[n, m]`` array, or :class:`EffectiveInformationError` saying what is wrong."""
    t = np.asarray(tpm, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise EffectiveInformationError(f"{what}: expected a 2-D [states, outputs] matrix, got shape {list(t.shape)}")
    if not np.isfinite(t).all():
        raise EffectiveInformationError(f"{what}: contains NaN or infinite entries")
    if (t < 0).any():
        raise EffectiveInformationError(f"{what}: negative probability {t.min():g}")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad.size:
        raise EffectiveInformationError(f"{what}: row {int(bad[0])} sums to {sums[bad[0]]:.6g}, not 1")
    return t / sums[:, None]


def effective_information(tpm) -> EffectiveInformation:
    """Hoel's EI, determinism, degeneracy and effectiveness of ``tpm`` (``[states, outputs]``, rows sum to 1)."""
    t = check_tpm(tpm)
    return _measures(t)


def _measures(t: np.ndarray) -> EffectiveInformation:
    n = t.shape[0]
    mean_row_entropy = float(entropy_bits(t, axis=1).mean())
    effect_entropy = float(entropy_bits(t.mean(axis=0)))
    log_n = float(np.log2(n))
    ei = effect_entropy - mean_row_entropy
    return EffectiveInformation(
        ei_bits=ei, determinism=log_n - mean_row_entropy, degeneracy=log_n - effect_entropy,
        effectiveness=ei / log_n if n > 1 else float("nan"), n_states=n, n_outputs=t.shape[1])


def _batch_measures(tpms: np.ndarray) -> np.ndarray:
    """:data:`MEASURES` of a stack of TPMs ``[B, n, m]`` → ``[B, 4]`` (the same formulas as :func:`_measures`)."""
    n = tpms.shape[1]
    mean_row_entropy = entropy_bits(tpms, axis=2).mean(axis=1)  # [B]
    effect_entropy = entropy_bits(tpms.mean(axis=1), axis=1)  # [B]
    log_n = np.log2(n)
    ei = effect_entropy - mean_row_entropy
    effectiveness = ei / log_n if n > 1 else np.full_like(ei, np.nan)
    return np.stack([ei, log_n - mean_row_entropy, log_n - effect_entropy, effectiveness], axis=1)


def check_samples(per_prompt) -> np.ndarray:
    """``per_prompt`` (``[prompts, states, outputs]``, each prompt's rows summing to 1) as float64."""
    t = np.asarray(per_prompt, dtype=np.float64)
    if t.ndim != 3 or min(t.shape) < 1:
        raise EffectiveInformationError(
            f"per-prompt transitions: expected [prompts, states, outputs], got shape {list(t.shape)}")
    bad = ~np.isfinite(t).all(axis=(1, 2)) | (t < 0).any(axis=(1, 2)) | \
        (np.abs(t.sum(axis=2) - 1.0) > ROW_SUM_TOLERANCE).any(axis=1)
    if bad.any():  # name the first bad prompt and what is wrong with it
        k = int(np.flatnonzero(bad)[0])
        check_tpm(t[k], f"per-prompt transitions, prompt {k}")
    return t


def pooled_tpm(per_prompt, weights: np.ndarray | None = None) -> np.ndarray:
    """The TPM over prompts: each row the (weighted) mean of the prompts' rows, ``[states, outputs]``."""
    t = np.asarray(per_prompt, dtype=np.float64)
    w = np.full(t.shape[0], 1.0 / t.shape[0]) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    return np.tensordot(w, t, axes=1)


POOLINGS = ("conditional", "pooled")
"""How prompts combine: ``conditional`` — each prompt's own TPM, measures averaged over prompts
(EI is then the conditional mutual information I(state; output | prompt): what the states do
in a given context); ``pooled`` — one TPM, the prompts' rows averaged (EI = I(state; output)
with the prompt as unobserved background: only an effect that is the same across prompts counts)."""


@dataclass(frozen=True)
class EIEstimate:
    """EI over a set of prompts (``pooling``), with bootstrap intervals over prompts."""

    value: EffectiveInformation
    """Measured on all prompts."""
    intervals: dict
    """Measure name → ``(low, high)`` at ``confidence``."""
    n_prompts: int
    n_boot: int
    confidence: float
    interval: str = "basic"
    """How the intervals were made (:data:`INTERVALS`)."""
    pooling: str = "conditional"
    """How the prompts were combined (:data:`POOLINGS`)."""

    def to_dict(self) -> dict:
        return {**self.value.to_dict(), "intervals": {k: list(v) for k, v in self.intervals.items()},
                "n_prompts": self.n_prompts, "n_boot": self.n_boot, "confidence": self.confidence,
                "interval": self.interval, "pooling": self.pooling}


def _resample_weights(n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_prompts]`` multiplicities of prompts drawn with replacement (a fixed stream per seed)."""
    rng = np.random.default_rng([seed, *b"ei-bootstrap"])
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot).astype(np.float64)


INTERVALS = ("basic", "percentile")
"""Bootstrap interval kinds: ``basic`` (2θ̂ − upper/lower percentile; corrects the resampling bias) or ``percentile``."""


def _interval(values: np.ndarray, estimate: float, confidence: float, method: str) -> tuple[float, float]:
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    if method == "basic":
        low, high = 2 * estimate - high, 2 * estimate - low
    return float(low), float(high)


def _estimator(t: np.ndarray, pooling: str):
    """A function of prompt weights ``[B, P]`` → the four :data:`MEASURES` for each row, ``[B, 4]``."""
    if pooling == "pooled":
        def pooled(weights):
            tpms = (weights @ t.reshape(t.shape[0], -1)).reshape(len(weights), *t.shape[1:])  # [B, S, O]
            tpms /= weights.sum(axis=1)[:, None, None]
            return _batch_measures(tpms)
        return pooled
    if pooling != "conditional":
        raise EffectiveInformationError(f"pooling {pooling!r}: use {' or '.join(POOLINGS)}")
    per = _batch_measures(t)  # [P, 4]: each prompt's own TPM
    return lambda weights: (weights @ per) / weights.sum(axis=1, keepdims=True)  # a weighted mean: all draws at once


def _check_options(confidence: float, interval: str) -> None:
    if not 0 < confidence < 1:
        raise EffectiveInformationError(f"confidence must be between 0 and 1, got {confidence}")
    if interval not in INTERVALS:
        raise EffectiveInformationError(f"interval {interval!r}: use {' or '.join(INTERVALS)}")


def bootstrap_ei(per_prompt, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                 interval: str = "basic", pooling: str = "conditional") -> EIEstimate:
    """EI over the prompts of ``per_prompt`` (``[prompts, states, outputs]``, combined by ``pooling``)
    and bootstrap intervals (prompts resampled with replacement ``n_boot`` times; see :data:`INTERVALS`)."""
    t = check_samples(per_prompt)
    _check_options(confidence, interval)
    estimate = _estimator(t, pooling)
    point = estimate(np.ones((1, t.shape[0])))[0]
    draws = estimate(_resample_weights(t.shape[0], n_boot, seed))  # [n_boot, 4]
    n = t.shape[1]
    value = EffectiveInformation(*(float(v) for v in point), n_states=n, n_outputs=t.shape[2])
    intervals = {name: _interval(draws[:, k], point[k], confidence, interval) for k, name in enumerate(MEASURES)}
    return EIEstimate(value, intervals, t.shape[0], n_boot, confidence, interval, pooling)


def bootstrap_contrast(samples, coefficients, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                       interval: str = "basic", pooling: str = "conditional") -> dict:
    """Σ cᵢ·EI(samplesᵢ) in bits, where every ``samplesᵢ`` covers the *same* prompts (in the same
    order), with a bootstrap interval that resamples the prompts once for all of them (so what
    they share cancels): a difference between two scales, or a change between two checkpoints
    of one scale against that of another. Returns ``{"value", "low", "high", "n_boot",
    "confidence", "interval", "pooling"}``."""
    arrays = [check_samples(s) for s in samples]
    coefficients = [float(c) for c in coefficients]
    if len(arrays) != len(coefficients) or not arrays:
        raise EffectiveInformationError(f"contrast: {len(arrays)} sample sets but {len(coefficients)} coefficients")
    if len({a.shape[0] for a in arrays}) != 1:
        raise EffectiveInformationError(f"contrast: different numbers of prompts {[a.shape[0] for a in arrays]}")
    _check_options(confidence, interval)
    estimators = [_estimator(a, pooling) for a in arrays]
    n = arrays[0].shape[0]

    def combined(weights):  # [B, P] -> [B]
        return sum(c * e(weights)[:, 0] for c, e in zip(coefficients, estimators))

    value = float(combined(np.ones((1, n)))[0])
    draws = combined(_resample_weights(n, n_boot, seed))
    low, high = _interval(draws, value, confidence, interval)
    return {"value": value, "low": low, "high": high, "n_boot": n_boot, "confidence": confidence,
            "interval": interval, "pooling": pooling}


def paired_difference(per_prompt_a, per_prompt_b, n_boot: int = 1000, confidence: float = 0.95,
                      seed: int = 0, interval: str = "basic", pooling: str = "conditional") -> dict:
    """EI(a) − EI(b) over the same prompts (:func:`bootstrap_contrast` with coefficients 1, −1);
    the value is under ``"diff"``."""
    out = bootstrap_contrast([per_prompt_a, per_prompt_b], [1, -1], n_boot, confidence, seed, interval, pooling)
    return {"diff": out.pop("value"), **out}


def shuffle_states(per_prompt, seed: int = 0) -> np.ndarray:
    """The shuffled-states control: each prompt's rows permuted independently (a fixed stream per seed).

    Every prompt keeps its own outputs; what any one state does is no longer the same across
    prompts. A measured EI that survives this is not an effect of the states.
    """
    t = np.asarray(per_prompt)
    rng = np.random.default_rng([seed, *b"ei-shuffle"])
    return np.stack([t[k, rng.permutation(t.shape[1])] for k in range(t.shape[0])])


def one_hot_outputs(choices: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Per-prompt TPMs from deterministic outputs: ``choices`` ``[prompts, states]`` (e.g. the top-1
    token of each row) → (``[prompts, states, distinct outputs]`` one-hot, the outputs in column order)."""
    choices = np.asarray(choices)
    labels, columns = np.unique(choices, return_inverse=True)
    columns = columns.reshape(choices.shape)
    out = np.zeros((*choices.shape, len(labels)), dtype=np.float64)
    np.put_along_axis(out, columns[..., None], 1.0, axis=-1)
    return out, [int(v) for v in labels]


__all__ = ["EIEstimate", "bootstrap_contrast", "EffectiveInformation", "EffectiveInformationError", "INTERVALS", "MEASURES", "POOLINGS", "bootstrap_ei",
           "check_tpm", "effective_information", "entropy_bits", "one_hot_outputs", "paired_difference",
           "pooled_tpm", "shuffle_states"]
