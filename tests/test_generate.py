"""hooked_stream_generate against mlx-lm's own stream_generate and independent forwards."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama, make_untied_llama
from mlx_lm.generate import stream_generate

from mlx_hooks import (
    ActivationRecorder,
    AddVector,
    ContextLengthError,
    SamplingSettings,
    hooked,
    hooked_stream_generate,
)
from mlx_hooks.sampling import entropy_bits

PROMPT = "Hello world"
N_TOKENS = 12
ALL_RESID = [f"resid_post.{i}" for i in range(3)]




@pytest.fixture(scope="module")
def model():
    return make_untied_llama()


@pytest.fixture(scope="module")
def prompt_tokens(tokenizer):
    return list(tokenizer.encode(PROMPT))


def _module_ids(model) -> list[int]:
    return [id(model.model), id(model.model.embed_tokens), *(id(layer) for layer in model.model.layers),
            *(id(layer.self_attn) for layer in model.model.layers), *(id(layer.mlp) for layer in model.model.layers)]


def _logprobs(model, tokens) -> np.ndarray:
    """Independent, cache-free forward: log-softmax of every position, [T, V] float64."""
    logits = np.array(model(mx.array([list(tokens)]))[0].astype(mx.float32)).astype(np.float64)
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)


def _reference_tokens(model, tokenizer, prompt, n=N_TOKENS) -> list[int]:
    return [r.token for r in stream_generate(model, tokenizer, mx.array(prompt), max_tokens=n)]


# -- agreement with mlx-lm -----------------------------------------------------------------------


def test_plain_generation_equals_mlx_lm_greedy(model, tokenizer, prompt_tokens):
    reference = _reference_tokens(model, tokenizer, prompt_tokens)
    assert len(reference) == N_TOKENS
    assert len(set(reference)) >= 5, f"degenerate test sequence {reference}"
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS))
    assert [s.token for s in steps] == reference
    # a str prompt is encoded the same way
    assert [s.token for s in hooked_stream_generate(model, tokenizer, PROMPT, max_tokens=N_TOKENS)] == reference
    assert steps[-1].finish_reason == "length"
    assert all(s.finish_reason is None for s in steps[:-1])
    assert "".join(s.text for s in steps) == tokenizer.decode(reference)


def test_a_bfloat16_model_streams_float32_logprobs_and_mlx_lm_greedy_tokens(tokenizer, prompt_tokens, monkeypatch):
    """The upcast happens inside the step's graph (no op queued behind the next forward): the step's
    log-probabilities are float32 and equal the float32 log-softmax of the model's own logits, and
    the greedy tokens are mlx-lm's."""
    from mlx_hooks.generate import _Float32Logits

    model = make_untied_llama()
    model.set_dtype(mx.bfloat16)
    reference = _reference_tokens(model, tokenizer, prompt_tokens)
    import mlx_hooks.generate as generate

    seen, make_step = [], generate._make_step
    monkeypatch.setattr(generate, "_make_step", lambda i, p, response, *a: seen.append(response.logprobs.dtype)
                        or make_step(i, p, response, *a))
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS, keep_logprobs=True))
    assert [s.token for s in steps] == reference
    assert seen == [mx.float32] * N_TOKENS  # already float32 as mlx-lm hands them over: no upcast after the step
    assert all(s.logprobs.dtype == np.float32 for s in steps)
    expected = _logprobs(model, prompt_tokens + reference[:-1])[len(prompt_tokens) - 1:]  # [N, V]
    assert np.abs(np.stack([s.logprobs for s in steps]) - expected).max() < 2e-2  # bf16 forward, float32 head
    upcast = _Float32Logits()
    logits = mx.array([[1.0, 3.0, 2.0]], dtype=mx.bfloat16)
    assert upcast(None, logits).dtype == mx.float32
    assert upcast.processors == [upcast]  # a bfloat16 model keeps the processor for every step
    same = mx.array([[1.0, 2.0]])
    assert upcast(None, same) is same  # float32 logits pass through untouched
    assert upcast.processors == []  # and mlx-lm is told it has no processor left to run


def test_a_float32_model_drops_the_upcast_after_the_first_step(model, tokenizer, prompt_tokens, monkeypatch):
    """mlx-lm keeps the token history only while a processor is listed: with float32 logits the
    list mlx-lm was given is empty after the prefill, and the tokens are still mlx-lm's own."""
    import mlx_hooks.generate as generate

    made = []
    original = generate._Float32Logits
    monkeypatch.setattr(generate, "_Float32Logits", lambda: made.append(original()) or made[-1])
    reference = _reference_tokens(model, tokenizer, prompt_tokens)
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS))
    assert [s.token for s in steps] == reference
    assert len(made) == 1 and made[0].processors == []


def test_generation_with_captures_equals_mlx_lm_greedy(model, tokenizer, prompt_tokens):
    reference = _reference_tokens(model, tokenizer, prompt_tokens)
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS,
                                        capture=["embed", *ALL_RESID, "attn_out.1", "mlp_out.2"]))
    assert [s.token for s in steps] == reference


def test_cached_residuals_equal_a_full_forward(model, tokenizer, prompt_tokens):
    recorder = ActivationRecorder()
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS,
                                        capture=ALL_RESID, recorder=recorder))
    full = prompt_tokens + [s.token for s in steps]
    with hooked(model, capture=ALL_RESID) as hooks:
        mx.eval(model(mx.array([full])))
    for point in ALL_RESID:
        assert recorder.positions(point).tolist() == list(range(len(full)))
        np.testing.assert_allclose(np.array(recorder.stack(point)), np.array(hooks.recorder.stack(point)),
                                   rtol=1e-4, atol=1e-4)


# -- step fields -----------------------------------------------------------------------------


def test_step_fields_match_an_independent_forward(model, tokenizer, prompt_tokens):
    P = len(prompt_tokens)
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS, top_k=5))
    full = prompt_tokens + [s.token for s in steps]
    logprobs = _logprobs(model, full)  # row t predicts token t+1
    for i, step in enumerate(steps):
        assert step.index == i
        assert step.position == P + i
        assert step.prompt_tokens == P
        row = logprobs[step.position - 1]
        assert step.token == int(row.argmax())
        assert step.prob == pytest.approx(math.exp(row[step.token]), rel=1e-4, abs=1e-6)
        probs = np.exp(row)
        raw_entropy = float(-(probs * row).sum() / math.log(2))
        assert step.raw_entropy == pytest.approx(raw_entropy, rel=1e-4, abs=1e-5)
        assert step.entropy == 0.0  # greedy: a point mass
        assert step.sampling_prob == pytest.approx(1.0)
        assert len(step.top_k) == 5
        top_probs = [alt.prob for alt in step.top_k]
        assert top_probs == sorted(top_probs, reverse=True)
        assert step.top_k[0].token == step.token
        assert [alt.token for alt in step.top_k] == [int(t) for t in np.argsort(-row)[:5]]
        np.testing.assert_allclose(top_probs, np.sort(probs)[::-1][:5], rtol=1e-4, atol=1e-6)
        assert all(alt.text == tokenizer.decode([alt.token]) for alt in step.top_k)
    assert any(s.raw_entropy > 0.1 for s in steps)


def test_temperature_with_top_k_sampling(model, tokenizer, prompt_tokens):
    settings = SamplingSettings(temp=1.0, top_k=5, seed=3)
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS, sampling=settings, top_k=5))
    full = prompt_tokens + [s.token for s in steps]
    logprobs = _logprobs(model, full)
    for step in steps:
        row = logprobs[step.position - 1]
        top5 = np.argsort(-row)[:5]
        assert step.token in top5.tolist()
        assert 0 < step.entropy <= math.log2(5) + 1e-5
        assert step.sampling_prob > 0
        kept = np.exp(row[top5] - np.logaddexp.reduce(row[top5]))  # renormalised top-5
        assert step.sampling_prob == pytest.approx(float(kept[top5.tolist().index(step.token)]), rel=1e-4)
        assert step.entropy == pytest.approx(float(-(kept * np.log2(kept)).sum()), rel=1e-4, abs=1e-5)
        assert step.prob == pytest.approx(math.exp(row[step.token]), rel=1e-4, abs=1e-6)
        assert step.sampling_prob >= step.prob - 1e-6


def test_seed_makes_sampling_reproducible(model, tokenizer, prompt_tokens):
    def run(seed):
        settings = SamplingSettings(temp=2.0, seed=seed)
        return [s.token for s in hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS,
                                                        sampling=settings)]

    first = run(7)
    assert run(7) == first
    assert run(8) != first
    assert first != _reference_tokens(model, tokenizer, prompt_tokens)  # really sampled


def test_sampling_settings_validate():
    for bad in ({"temp": -1}, {"top_p": 1.5}, {"min_p": -0.1}, {"top_k": -2}):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)


def test_sampling_logprobs_and_entropy_bits():
    logprobs = mx.log(mx.array([0.5, 0.25, 0.125, 0.125]))
    assert float(entropy_bits(logprobs).item()) == pytest.approx(1.75)
    greedy = SamplingSettings().sampling_logprobs(logprobs)
    assert np.exp(np.array(greedy)).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert float(entropy_bits(greedy).item()) == 0.0
    top2 = np.exp(np.array(SamplingSettings(temp=1.0, top_k=2).sampling_logprobs(logprobs)))
    np.testing.assert_allclose(top2, [2 / 3, 1 / 3, 0, 0], atol=1e-6)
    hot = np.exp(np.array(SamplingSettings(temp=2.0).sampling_logprobs(logprobs)))
    expected = np.sqrt([0.5, 0.25, 0.125, 0.125])
    np.testing.assert_allclose(hot, expected / expected.sum(), rtol=1e-5)


# -- control -----------------------------------------------------------------------------------


def test_should_stop_cancels_and_restores_the_model(model, tokenizer, prompt_tokens):
    before = _module_ids(model)
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= 3

    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS, capture=ALL_RESID,
                                        interventions={"resid_post.0": AddVector(mx.ones(64), 0.0)},
                                        should_stop=should_stop))
    assert len(steps) == 3
    assert steps[-1].finish_reason is None
    assert _module_ids(model) == before


def test_closing_the_generator_restores_the_model(model, tokenizer, prompt_tokens):
    before = _module_ids(model)
    gen = hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS, capture=ALL_RESID)
    next(gen)
    assert _module_ids(model) != before  # hooks attached while it runs
    gen.close()
    assert _module_ids(model) == before


@pytest.mark.parametrize("how", ["add", "scale"])
def test_steering_changed_mid_generation_takes_effect(model, tokenizer, prompt_tokens, how):
    """Through session_out (add) or a mutable AddVector (scale), with nothing else attached.

    mlx-lm builds the forward of token k+1 before it hands out token k, so a change made
    after step k can only reach the forward that produces token k+2."""
    base = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=8, capture=["resid_post.0"]))
    sessions: list = []
    steer = AddVector(mx.ones(64), 0.0)
    interventions = {"resid_post.0": steer} if how == "scale" else None
    steps = []
    for step in hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=8, interventions=interventions,
                                       session_out=sessions, capture=["resid_post.0"] if how == "scale" else ()):
        steps.append(step)
        if step.index == 2:
            if how == "add":
                sessions[0].add("resid_post.0", AddVector(mx.ones(64), 5.0))
            else:
                steer.scale = 5.0
    assert len(sessions) == 1 and len(steps) == 8
    assert [s.token for s in steps[:4]] == [b.token for b in base[:4]]
    assert [s.token for s in steps[4:]] != [b.token for b in base[4:]]
    if how == "scale":
        for s, b in zip(steps[:4], base[:4]):
            assert np.array_equal(s.activations["resid_post.0"], b.activations["resid_post.0"])
        np.testing.assert_allclose(steps[4].activations["resid_post.0"] - base[4].activations["resid_post.0"],
                                   5.0, atol=1e-4)


def test_end_of_sequence_finishes_with_stop(tokenizer, prompt_tokens):
    model = make_untied_llama()
    eos = next(iter(tokenizer.eos_token_ids))
    final = np.array(model.model(mx.array([prompt_tokens]))[0, -1])  # normed last residual
    w = np.array(model.lm_head.weight)
    w[eos] = 50.0 * np.sign(final)  # EOS wins right after the prompt
    model.lm_head.weight = mx.array(w)
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=N_TOKENS))
    assert len(steps) == 1
    assert steps[0].token == eos
    assert steps[0].finish_reason == "stop"


def test_readers_receive_activations(model, tokenizer, prompt_tokens):
    seen = []

    def norm_reader(acts):
        seen.append(sorted(acts))
        assert all(a.shape == (64,) for a in acts.values())
        return float(mx.linalg.norm(acts["resid_post.1"]).item())

    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=5, capture=["resid_post.1", "embed"],
                                        readers={"norm": norm_reader, "const": lambda acts: "x"}))
    assert len(seen) == 5 and seen[0] == ["embed", "resid_post.1"]
    for step in steps:
        assert set(step.readings) == {"norm", "const"}
        assert step.readings["const"] == "x"
        assert step.readings["norm"] == pytest.approx(float(np.linalg.norm(step.activations["resid_post.1"])), rel=1e-5)


def test_readers_run_even_without_step_activations(model, tokenizer, prompt_tokens):
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=3, capture=["resid_post.0"],
                                        readers={"n": lambda acts: len(acts)}, step_activations=False))
    assert [s.readings["n"] for s in steps] == [1, 1, 1]
    assert all(s.activations == {} for s in steps)


def test_step_activations_are_the_recorder_values_at_position_minus_one(model, tokenizer, prompt_tokens):
    recorder = ActivationRecorder()
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=6,
                                        capture=["resid_post.0", "resid_post.2"], recorder=recorder))
    for step in steps:
        assert set(step.activations) == {"resid_post.0", "resid_post.2"}
        for point, value in step.activations.items():
            assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (64,)
            assert np.array_equal(value, np.array(recorder.at(point, step.position - 1)[0]))
    # the lens of the final layer at position-1 predicts the greedy token
    last = steps[-1]
    logits = model.lm_head(model.model.norm(mx.array(last.activations["resid_post.2"])))
    assert int(mx.argmax(logits).item()) == last.token


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_step_activations_of_every_point_kind_come_from_the_forward_that_chose_the_token(tokenizer, prompt_tokens,
                                                                                        dtype):
    # The per-step row is concatenated inside the forward (one transfer per step); it must hold, for
    # every point kind and width (attn_z, mlp_hidden are not d_model wide), what the recorder holds.
    from mlx_hooks import hook_points
    from mlx_hooks.hooks import HookSession

    model = make_tiny_llama(seed=3)
    model.set_dtype(dtype)
    points = hook_points(model)
    recorder, sessions = ActivationRecorder(), []
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=5, capture=points,
                                        recorder=recorder, session_out=sessions))
    assert isinstance(sessions[0], HookSession) and sessions[0].row_points == points
    widths = {p: sessions[0].adapter.width(p) for p in points}
    assert len(set(widths.values())) > 1
    for step in steps:
        assert list(step.activations) == points
        for point, value in step.activations.items():
            assert value.dtype == np.float32 and value.shape == (widths[point],)
            held = recorder.at(point, step.position - 1)[0].astype(mx.float32)
            assert np.array_equal(value, np.array(held)), point
    assert sessions[0]._last_rows == {}  # nothing is held once generation ends


def test_host_storage_recorder_during_generation(model, tokenizer, prompt_tokens):
    from mlx_hooks import CacheConfig

    recorder = ActivationRecorder(CacheConfig(storage="host"))
    steps = list(hooked_stream_generate(model, tokenizer, prompt_tokens, max_tokens=6, capture=["resid_post.1"],
                                        recorder=recorder))
    assert all(isinstance(c.data, np.ndarray) for c in recorder._chunks["resid_post.1"])
    assert recorder.end == len(prompt_tokens) + len(steps)
    for step in steps:
        assert np.array_equal(step.activations["resid_post.1"], np.array(recorder.at("resid_post.1", step.position - 1)[0]))


def test_prompt_longer_than_the_context_raises(model, tokenizer):
    with pytest.raises(ContextLengthError, match="512"):
        next(hooked_stream_generate(model, tokenizer, [65] * 600, max_tokens=4))
    with pytest.raises(ContextLengthError):
        next(hooked_stream_generate(model, tokenizer, [65] * 512, max_tokens=4))
    with pytest.raises(ValueError, match="empty"):
        next(hooked_stream_generate(model, tokenizer, [], max_tokens=4))


def test_max_tokens_is_clamped_to_the_context(tokenizer):
    model = make_tiny_llama()  # cheap tied model; max_position_embeddings=512
    steps = list(hooked_stream_generate(model, tokenizer, [65, 66, 67] * 169 + [68], max_tokens=50))  # 508 tokens
    assert len(steps) == 4
    assert steps[-1].position == 511
    assert steps[-1].finish_reason == "length"
