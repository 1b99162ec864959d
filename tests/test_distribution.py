"""The numpy sampling distribution matches mlx-lm's own filters and sampler."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

from mlx_hooks import distribution


@pytest.fixture(scope="module")
def logprobs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 500)) * 3.0
    return distribution.normalise(logits)


def _kept(a) -> np.ndarray:
    return np.isfinite(np.asarray(a))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_mlx_lm(logprobs, top_p):
    ours = distribution.filter_top_p(logprobs, top_p)
    theirs = apply_top_p(mx.array(logprobs.astype(np.float32)), top_p)
    assert (_kept(ours) == _kept(theirs)).all()
    assert 0 < _kept(ours).sum() < logprobs.size


@pytest.mark.parametrize("min_p", [0.01, 0.1, 0.5])
def test_min_p_matches_mlx_lm(logprobs, min_p):
    ours = distribution.filter_min_p(logprobs, min_p)
    theirs = apply_min_p(mx.array(logprobs.astype(np.float32)), min_p)
    assert (_kept(ours) == _kept(theirs)).all()


@pytest.mark.parametrize("top_k", [1, 5, 50])
def test_top_k_matches_mlx_lm(logprobs, top_k):
    ours = distribution.filter_top_k(logprobs, top_k)
    theirs = apply_top_k(mx.array(logprobs.astype(np.float32)), top_k)
    assert (_kept(ours) == _kept(theirs)).all()
    assert (_kept(ours).sum(axis=-1) == top_k).all()


def test_temperature_limits(logprobs):
    row = logprobs[0]
    cold = distribution.sampling_logprobs(row, temp=0.01)
    assert np.exp(cold).max() > 0.99  # T -> 0: one dominant continuation
    hot = distribution.sampling_logprobs(row, temp=1000.0)
    assert distribution.entropy_bits(hot) == pytest.approx(math.log2(row.size), abs=0.01)  # T -> inf: uniform
    assert distribution.effective_choices(hot) == pytest.approx(row.size, rel=0.01)
    same = distribution.sampling_logprobs(row, temp=1.0)
    np.testing.assert_allclose(same, row, atol=1e-9)


def test_sampler_draws_from_this_distribution():
    """Frequencies of mlx-lm's sampler agree with our distribution (top-k + temperature)."""
    from mlx_hooks.sampling import SamplingSettings

    logits = np.array([2.0, 1.5, 1.0, 0.2, -1.0, -3.0])
    lp = distribution.normalise(logits)
    settings = SamplingSettings(temp=0.8, top_k=3)
    expected = np.exp(settings.sampling_logprobs(lp))
    mx.random.seed(0)
    sampler = settings.make_sampler()
    draws = np.array(sampler(mx.broadcast_to(mx.array(lp.astype(np.float32)), (20000, lp.size))))
    freq = np.bincount(draws, minlength=lp.size) / draws.size
    np.testing.assert_allclose(freq, expected, atol=0.015)
    assert freq[3:].sum() == 0


@pytest.mark.parametrize("vocab", [7, 300, 2048, 32000, 49153, 256000])
@pytest.mark.parametrize("k", [0, 1, 5, 40])
def test_top_indices_equal_a_full_sort(vocab, k):
    rng = np.random.default_rng(vocab + k)
    values = rng.normal(size=vocab).astype(np.float32)
    values[rng.integers(0, vocab, size=max(1, vocab // 10))] = -np.inf  # masked tokens
    expected = np.argsort(-values, kind="stable")[:k]
    assert np.array_equal(distribution.top_indices(values, k), expected)


def test_top_indices_orders_equal_values_by_index():
    values = np.full(40000, -5.0, dtype=np.float32)
    values[[31999, 7, 20000]] = 1.0
    assert distribution.top_indices(values, 3).tolist() == [7, 20000, 31999]


def test_entropy_bits_in_float32_matches_float64():
    rng = np.random.default_rng(1)
    lp64 = distribution.normalise(rng.normal(size=256000) * 4.0)
    lp64[:1000] = -np.inf
    lp32 = lp64.astype(np.float32)
    assert distribution.entropy_bits(lp32).dtype == np.float32
    assert float(distribution.entropy_bits(lp32)) == pytest.approx(float(distribution.entropy_bits(lp64)), rel=1e-5)
    point_mass = np.full(10, -np.inf, dtype=np.float32)
    point_mass[3] = 0.0
    assert float(distribution.entropy_bits(point_mass)) == 0.0
