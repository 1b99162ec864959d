"""Logit lens and activation patching on tiny random llamas (tied and untied unembedding)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama, make_untied_llama

from mlx_hooks import ActivationRecorder, Patch, activation_patching, hooked, logit_lens, run_logit_lens

TOKENS = [12, 80, 33, 7, 101, 55, 3, 240]
K = 5




def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def _model_logprobs(model, tokens) -> np.ndarray:
    return _log_softmax(np.array(model(mx.array([list(tokens)]))[0]))


# -- logit lens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_tiny_llama, make_untied_llama], ids=["tied", "untied"])
def test_lens_on_the_last_layer_equals_the_model_output(make):
    model = make()
    result = run_logit_lens(model, TOKENS, k=K)
    assert result.points == ("resid_post.0", "resid_post.1", "resid_post.2")
    assert result.top_tokens.shape == (3, len(TOKENS), K) and result.top_probs.shape == (3, len(TOKENS), K)
    assert result.positions.tolist() == list(range(len(TOKENS)))
    logprobs = _model_logprobs(model, TOKENS)
    expected_top = np.argsort(-logprobs, axis=-1, kind="stable")[:, :K]
    assert np.array_equal(result.top_tokens[-1], expected_top)
    np.testing.assert_allclose(result.top_probs[-1], np.exp(np.take_along_axis(logprobs, expected_top, -1)),
                               rtol=1e-4, atol=1e-6)
    # earlier layers predict something else somewhere (the lens is not trivially the output)
    assert not np.array_equal(result.top_tokens[0], result.top_tokens[-1])


def test_lens_targets_are_consistent_with_top_tokens(tiny_model):
    result = run_logit_lens(tiny_model, TOKENS, k=K)
    targets = TOKENS[1:] + [TOKENS[-1]]
    assert result.target_tokens.tolist() == targets
    assert result.target_probs.shape == result.target_ranks.shape == (3, len(TOKENS))
    assert np.all(np.diff(result.top_probs, axis=-1) <= 1e-7)  # best first
    for p in range(3):
        for t in range(len(TOKENS)):
            rank, prob = int(result.target_ranks[p, t]), float(result.target_probs[p, t])
            assert prob <= result.top_probs[p, t, 0] + 1e-6
            if rank < K:
                assert result.top_tokens[p, t, rank] == targets[t]
                assert prob == pytest.approx(float(result.top_probs[p, t, rank]), rel=1e-5)
            else:
                assert targets[t] not in result.top_tokens[p, t].tolist()
                assert prob <= result.top_probs[p, t, -1] + 1e-6
    # the final layer's target probability is the model's probability of the next token
    logprobs = _model_logprobs(tiny_model, TOKENS)
    np.testing.assert_allclose(result.target_probs[-1], np.exp(logprobs[np.arange(len(TOKENS)), targets]),
                               rtol=1e-4, atol=1e-7)
    ranks = (logprobs > logprobs[np.arange(len(TOKENS)), targets][:, None]).sum(-1)
    assert np.array_equal(result.target_ranks[-1], ranks)


def test_logit_lens_accepts_arrays_and_recorders(tiny_model, tokenizer):
    with hooked(tiny_model, capture=["resid_post.1", "resid_pre.2"]) as hooks:
        mx.eval(tiny_model(mx.array([TOKENS])))
    rec: ActivationRecorder = hooks.recorder
    from_recorder = logit_lens(tiny_model, rec, k=3, points=["resid_post.1", "resid_pre.2"])
    from_3d = logit_lens(tiny_model, {"resid_post.1": rec.stack("resid_post.1")}, k=3)
    from_2d = logit_lens(tiny_model, {"resid_post.1": rec.stack("resid_post.1")[0]}, k=3)
    assert from_recorder.target_probs is None and from_recorder.target_ranks is None
    assert np.array_equal(from_recorder.top_tokens[0], from_3d.top_tokens[0])
    assert np.array_equal(from_3d.top_tokens, from_2d.top_tokens)
    # resid_pre.2 is resid_post.1: same lens
    assert np.array_equal(from_recorder.top_tokens[0], from_recorder.top_tokens[1])
    texts = from_2d.top_texts(tokenizer)
    assert texts == [[tokenizer.decode([int(t)]) for t in from_2d.top_tokens[0, :, 0]]]


def test_run_logit_lens_selected_layers(tiny_model):
    result = run_logit_lens(tiny_model, TOKENS, k=2, kind="resid_pre", layers=[-1, 0])
    assert result.points == ("resid_pre.2", "resid_pre.0")
    assert result.top_tokens.shape == (2, len(TOKENS), 2)


# -- activation patching ------------------------------------------------------------------------


CLEAN = [40, 71, 68, 90, 12, 77, 5, 33]
CORRUPT_AT = 3
CORRUPTED = CLEAN[:CORRUPT_AT] + [150] + CLEAN[CORRUPT_AT + 1:]


def _answers(model):
    clean, corrupted = (_model_logprobs(model, t)[-1] for t in (CLEAN, CORRUPTED))
    a = int(clean.argmax())
    b = int(corrupted.argmax()) if int(corrupted.argmax()) != a else int(np.argsort(-corrupted)[1])
    return a, b


@pytest.fixture(scope="module")
def patch_model():
    return make_untied_llama(seed=4)


def test_patching_scores_follow_causality(patch_model):
    model = patch_model
    answers = _answers(model)
    before = [id(model.model), *(id(layer) for layer in model.model.layers)]
    result = activation_patching(model, CLEAN, CORRUPTED, answers)
    assert [id(model.model), *(id(layer) for layer in model.model.layers)] == before
    assert result.kind == "resid_pre" and result.layers == (0, 1, 2)
    assert result.scores.shape == (3, len(CLEAN))
    assert result.answer_tokens == answers
    assert result.clean_logit_diff != pytest.approx(result.corrupted_logit_diff)
    # patching the differing token's embedding restores the clean run exactly
    assert result.scores[0, CORRUPT_AT] == pytest.approx(1.0, abs=1e-4)
    # every other position's embedding is the same in both runs: no effect
    others = [p for p in range(len(CLEAN)) if p != CORRUPT_AT]
    np.testing.assert_allclose(result.scores[0, others], 0.0, atol=1e-4)
    # at later layers, positions before the corrupted token are identical in both runs
    np.testing.assert_allclose(result.scores[:, :CORRUPT_AT], 0.0, atol=1e-4)
    layer, position, score = result.best()
    assert score == pytest.approx(float(result.scores.max()))
    assert result.scores[result.layers.index(layer), position] == score
    assert score >= 1.0 - 1e-4


def test_patching_scores_match_individual_patched_runs(patch_model):
    model = patch_model
    answers = _answers(model)
    result = activation_patching(model, CLEAN, CORRUPTED, answers, kind="resid_post", layers=[1, -1])
    assert result.layers == (1, 2)
    with hooked(model, capture=["resid_post.1"]) as hooks:
        mx.eval(model(mx.array([CLEAN])))
    source = hooks.recorder.stack("resid_post.1")[0]

    def diff(logits):
        last = np.array(logits[0, -1])
        return float(last[answers[0]] - last[answers[1]])

    c, r = diff(model(mx.array([CLEAN]))), diff(model(mx.array([CORRUPTED])))
    assert result.clean_logit_diff == pytest.approx(c, rel=1e-4, abs=1e-4)
    assert result.corrupted_logit_diff == pytest.approx(r, rel=1e-4, abs=1e-4)
    for position in (CORRUPT_AT, CORRUPT_AT + 2, len(CLEAN) - 1):
        with hooked(model, interventions={"resid_post.1": Patch(source, positions=[position])}):
            patched = diff(model(mx.array([CORRUPTED])))
        assert result.scores[0, position] == pytest.approx((patched - r) / (c - r), abs=1e-3)
    # the last block's output at the last position is all the logits see
    assert result.scores[1, -1] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(result.scores[1, :-1], 0.0, atol=1e-4)


def test_unequal_lengths_raise_naming_both(tiny_model):
    with pytest.raises(ValueError) as info:
        activation_patching(tiny_model, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6], (1, 2))
    assert "5" in str(info.value) and "6" in str(info.value)
    assert "clean has 5" in str(info.value) and "corrupted has 6" in str(info.value)


def test_identical_prompts_are_refused(tiny_model):
    with pytest.raises(ValueError, match="same logit difference"):
        activation_patching(tiny_model, CLEAN, CLEAN, (1, 2))
