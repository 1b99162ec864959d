"""Effective information (mlx_hooks.effective_information) against closed forms, its bootstrap and
controls, and intervention states (mlx_hooks.intervention_states) applied exactly on a tiny model."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_hooks import hooked
from mlx_hooks.effective_information import (
    EffectiveInformationError, bootstrap_contrast, bootstrap_ei, effective_information, entropy_bits, one_hot_outputs,
    paired_difference, pooled_tpm, shuffle_states,
)
from mlx_hooks.interventions import ForwardContext
from mlx_hooks.intervention_states import (
    AddDirections, ClampLatents, SetCoordinates, SetProjections, state_intervention, state_table,
    transition_samples,
)
from mlx_hooks.sae.model import SAE, SAEConfig

from conftest import make_tiny_llama


# -- closed forms -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 5, 16])
def test_identity_has_log2_n_bits(n):
    ei = effective_information(np.eye(n))
    assert ei.ei_bits == pytest.approx(math.log2(n))
    assert ei.determinism == pytest.approx(math.log2(n)) and ei.degeneracy == pytest.approx(0.0)
    assert ei.effectiveness == pytest.approx(1.0)


def test_identical_rows_have_no_information():
    row = np.array([0.5, 0.25, 0.25])
    ei = effective_information(np.tile(row, (4, 1)))
    h = 1.5  # H(1/2, 1/4, 1/4) bits
    assert ei.ei_bits == pytest.approx(0.0, abs=1e-12)
    assert ei.determinism == pytest.approx(2 - h) and ei.degeneracy == pytest.approx(2 - h)
    uniform = effective_information(np.full((8, 8), 1 / 8))
    assert uniform.ei_bits == pytest.approx(0.0, abs=1e-12) and uniform.determinism == pytest.approx(0.0)


def test_degenerate_and_noisy_matrices_match_the_closed_form():
    # 4 states, two pairs collapse onto one output each: deterministic but degenerate, EI = 1 bit.
    tpm = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    ei = effective_information(tpm)
    assert (ei.ei_bits, ei.determinism, ei.degeneracy) == pytest.approx((1.0, 2.0, 1.0))
    assert ei.effectiveness == pytest.approx(0.5)
    # binary symmetric channel with error e: EI = 1 − H(e)
    e = 0.1
    bsc = effective_information([[1 - e, e], [e, 1 - e]])
    assert bsc.ei_bits == pytest.approx(1 + e * math.log2(e) + (1 - e) * math.log2(1 - e))
    # EI = determinism − degeneracy on an arbitrary matrix
    rng = np.random.default_rng(3)
    t = rng.dirichlet(np.ones(5), size=7)
    m = effective_information(t)
    assert m.ei_bits == pytest.approx(m.determinism - m.degeneracy)
    assert m.ei_bits == pytest.approx(entropy_bits(t.mean(0)) - entropy_bits(t, axis=1).mean())


def test_bad_matrices_are_refused_with_the_problem_named():
    with pytest.raises(EffectiveInformationError, match="row 1 sums to 0.5"):
        effective_information([[1, 0], [0.25, 0.25]])
    with pytest.raises(EffectiveInformationError, match="negative"):
        effective_information([[1.5, -0.5], [0, 1]])
    with pytest.raises(EffectiveInformationError, match="2-D"):
        effective_information([1.0, 0.0])
    with pytest.raises(EffectiveInformationError, match="prompt 1"):
        bootstrap_ei(np.stack([np.eye(2), np.full((2, 2), 0.7)]), n_boot=2)


# -- over prompts: pooling, bootstrap, controls ------------------------------------------------------
def test_pooling_bootstrap_and_the_shuffled_states_control():
    n_prompts, states = 30, 8
    rng = np.random.default_rng(0)
    # every prompt maps state s to output s, except that each prompt has one confused state
    choices = np.tile(np.arange(states), (n_prompts, 1))
    choices[np.arange(n_prompts), rng.integers(0, states, n_prompts)] = 0
    per_prompt, outputs = one_hot_outputs(choices)
    assert per_prompt.shape == (n_prompts, states, states) and outputs == list(range(states))
    assert np.allclose(pooled_tpm(per_prompt).sum(1), 1)
    est = bootstrap_ei(per_prompt, n_boot=300, seed=1, pooling="pooled")
    assert 2.4 < est.value.ei_bits < 3.0
    low, high = est.intervals["ei_bits"]
    assert low <= est.value.ei_bits <= high and high - low > 0
    shuffled = bootstrap_ei(shuffle_states(per_prompt, seed=2), n_boot=300, seed=1, pooling="pooled")
    assert shuffled.intervals["ei_bits"][1] < 1.0 < low  # the states' consistent effect is gone
    # conditional: each prompt's own TPM — 7 distinct outputs of 8 states (2.75 bits), or 8 (3 bits) where
    # the confused state was 0 anyway — and unchanged by the shuffle
    want = np.mean([3.0 if len(set(row)) == 8 else 2.75 for row in choices])
    conditional = bootstrap_ei(per_prompt, n_boot=300, seed=1)
    assert conditional.value.ei_bits == pytest.approx(want) and conditional.pooling == "conditional"
    assert 2.75 < want < 3.0 and bootstrap_ei(shuffle_states(per_prompt), n_boot=0).value.ei_bits == pytest.approx(want)
    # the same prompts under an intervention that does nothing: 0 bits whatever the prompts do
    inert, _ = one_hot_outputs(np.tile(rng.integers(0, 5, n_prompts)[:, None], (1, states)))
    for pooling in ("pooled", "conditional"):
        assert bootstrap_ei(inert, n_boot=50, pooling=pooling).value.ei_bits == pytest.approx(0.0, abs=1e-12)
    diff = paired_difference(per_prompt, inert, n_boot=300, pooling="pooled")
    assert diff["diff"] == pytest.approx(est.value.ei_bits) and diff["low"] > 2.0


def test_basic_intervals_correct_the_upward_bias_of_resampled_pooled_ei():
    """Outputs unrelated to the states (true EI 0): resampled prompts repeat, so the pooled plug-in EI
    goes up; the percentile interval sits above the estimate, the basic one is reflected below it,
    towards the true value. The conditional EI is a mean over prompts: no such shift."""
    rng = np.random.default_rng(5)
    noise, _ = one_hot_outputs(rng.integers(0, 40, size=(40, 8)))
    point = bootstrap_ei(noise, n_boot=0, pooling="pooled").value.ei_bits
    percentile = bootstrap_ei(noise, n_boot=400, pooling="pooled", interval="percentile").intervals["ei_bits"]
    basic = bootstrap_ei(noise, n_boot=400, pooling="pooled").intervals["ei_bits"]
    assert basic[1] == pytest.approx(2 * point - percentile[0]) and basic[0] == pytest.approx(2 * point - percentile[1])
    assert 0 <= basic[0] < basic[1] < point < percentile[0]
    conditional = bootstrap_ei(noise, n_boot=400)
    assert conditional.intervals["ei_bits"][0] < conditional.value.ei_bits < conditional.intervals["ei_bits"][1]
    with pytest.raises(EffectiveInformationError, match="pooling 'mean'"):
        bootstrap_ei(noise, pooling="mean")


def test_state_table_enumerates_every_combination_once():
    table = state_table(3)
    assert table.shape == (8, 3) and len({tuple(r) for r in table}) == 8
    assert table[0].tolist() == [0, 0, 0] and table[5].tolist() == [1, 0, 1]
    with pytest.raises(EffectiveInformationError, match="1 to 10 units"):
        state_table(11)


# -- states applied exactly on a hooked model ----------------------------------------------------------
PROMPT = [72, 101, 108, 108, 111, 32, 119]


def _run_capture(model, point, scale, capture=None):
    states = state_table(scale.n_units)
    batch = mx.array(np.tile(np.array(PROMPT, np.int32), (len(states), 1)))
    with hooked(model, capture=[capture or point]) as clean_hooks:
        model(batch)  # the same batch shape: the same float rounding as the edited run
    with hooked(model, capture=[capture or point],
                interventions={point: [state_intervention(scale, states, "last")]}) as hooks:
        model(batch)
    before = np.array(clean_hooks.recorder.stack(capture or point))  # [S, L, W], rows identical
    return states, before, np.array(hooks.recorder.stack(capture or point))  # [S, L, W]


def test_set_coordinates_sets_neurons_exactly_at_the_last_position():
    model = make_tiny_llama()
    scale = SetCoordinates("neurons", [3, 17, 40], low=[-1.25, 0.0, 0.5], high=[2.5, 3.0, 7.75])
    states, before, after = _run_capture(model, "mlp_hidden.1", scale)
    for s, state in enumerate(states):
        want = np.where(state.astype(bool), scale.high, scale.low)
        assert np.array_equal(after[s, -1, [3, 17, 40]], want)  # exactly the set values
        others = np.setdiff1d(np.arange(after.shape[-1]), [3, 17, 40])
        assert np.array_equal(after[s, -1, others], before[0, -1, others])
        assert np.array_equal(after[s, :-1], before[0, :-1])  # earlier positions untouched


def test_set_projections_and_added_directions_move_exactly_along_their_units():
    model = make_tiny_llama()
    rng = np.random.default_rng(4)
    u = rng.standard_normal((2, 64))
    scale = SetProjections("dirs", u, low=[-3.0, 1.0], high=[4.0, 6.0])
    states, before, after = _run_capture(model, "resid_post.1", scale)
    proj = after[:, -1] @ u.T  # [S, 2]
    assert np.allclose(proj, np.where(states.astype(bool), scale.high, scale.low), atol=1e-4)
    moved = after[:, -1] - before[0, -1]  # in the span of u only
    residual = moved - (moved @ np.linalg.pinv(u)) @ u
    assert np.abs(residual).max() < 1e-4
    vectors = rng.standard_normal((3, 64)).astype(np.float32)
    states, before, after = _run_capture(model, "resid_post.1", AddDirections("steer", vectors))
    assert np.allclose(after[:, -1] - before[0, -1], states @ vectors, atol=1e-5)
    assert np.array_equal(after[:, :-1], np.broadcast_to(before[:, :-1], after[:, :-1].shape))


def test_clamped_latents_match_the_saes_own_clamp_row_by_row():
    mx.random.seed(0)
    model = make_tiny_llama()
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="standard", hook_point="resid_post.1"))
    mx.eval(sae.parameters())
    scale = ClampLatents("sae", sae, [2, 9], on_values=[5.0, 3.0])
    states, before, after = _run_capture(model, "resid_post.1", scale)
    x = mx.array(before[:, -1:])  # [1, 1, 64]
    ctx = ForwardContext.from_offset(0, 1)
    for s, state in enumerate(states):
        want = sae.clamp_intervention([2, 9], [5.0 * state[0], 3.0 * state[1]], "all")(x, ctx)
        assert np.allclose(after[s, -1], np.array(want)[0, 0], atol=1e-5)
    latents = np.array(sae.encode(mx.array(after[:, -1])))[:, [2, 9]]
    assert latents[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)  # both off: ablated


def test_transition_samples_of_an_overriding_intervention():
    """States that push the residual hard towards tokens decide the next token on every prompt:
    each row is deterministic, and EI is the entropy of which token the 7 pushing states choose."""
    model = make_tiny_llama()
    # at the last block's output, push along the (tied) embedding rows of 3 tokens
    emb = np.array(model.model.embed_tokens.weight)
    tokens = [65, 66, 67]
    vectors = 300 * emb[tokens] / np.linalg.norm(emb[tokens], axis=1, keepdims=True)
    prompts = [PROMPT, [1, 2, 3, 4], [200, 100, 50]]
    samples = transition_samples(model, prompts, "resid_post.-1", AddDirections("push", vectors))
    assert samples.per_prompt.shape[:2] == (3, 8) and samples.states.tolist() == state_table(3).tolist()
    chosen = np.array(samples.outputs)[samples.per_prompt.argmax(-1)]  # [P, S]
    assert chosen[:, 4].tolist() == [65] * 3 and chosen[:, 2].tolist() == [66] * 3 and chosen[:, 1].tolist() == [67] * 3
    assert (chosen[:, 1:] == chosen[:1, 1:]).all()  # the same token on every prompt
    est = bootstrap_ei(samples.per_prompt[:, 1:], n_boot=20)  # state 000 (no push) left out: 7 states
    _, counts = np.unique(chosen[0, 1:], return_counts=True)
    assert est.value.determinism == pytest.approx(math.log2(7))
    assert est.value.ei_bits == pytest.approx(entropy_bits(counts / 7))
    classes = transition_samples(model, prompts, "resid_post.-1", AddDirections("push", vectors[:2]),
                                 classes={"A": [65], "B": [66]})
    assert classes.outputs == ["A", "B"] and np.allclose(classes.per_prompt.sum(-1), 1)
    assert (classes.per_prompt[:, 2, 0] > 0.99).all() and (classes.per_prompt[:, 1, 1] > 0.99).all()


def test_a_contrast_of_changes_resamples_prompts_once():
    """(A_after − A_before) − (B_after − B_before) on the same prompts: the closed-form value, and an
    interval that excludes 0 when only A changed."""
    rng = np.random.default_rng(7)
    n_prompts, states = 50, 4
    same = np.tile(rng.integers(0, 9, n_prompts)[:, None], (1, states))  # one output whatever the state
    distinct = rng.integers(0, 9, n_prompts)[:, None] * 10 + np.arange(states)[None]  # every state its own
    a_before, _ = one_hot_outputs(same)
    a_after, _ = one_hot_outputs(distinct)
    b, _ = one_hot_outputs(np.where(np.arange(states)[None] < 2, same, same + 100))  # 1 bit, before and after
    out = bootstrap_contrast([a_after, a_before, b, b], [1, -1, -1, 1], n_boot=200)
    assert out["value"] == pytest.approx(2.0) and out["low"] == pytest.approx(2.0) and out["high"] == pytest.approx(2.0)
    noisy = bootstrap_contrast([a_after, b], [1, -1], n_boot=200, pooling="pooled")
    assert noisy["low"] < noisy["value"] < noisy["high"]
    with pytest.raises(EffectiveInformationError, match="different numbers of prompts"):
        bootstrap_contrast([a_after, a_after[:10]], [1, -1])
