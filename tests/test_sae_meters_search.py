"""Feature meters and clamps (mlx_hooks.sae.meters), search (mlx_hooks.sae.search), `symbiont sae search/eval`."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_tiny_llama

from mlx_hooks.generate import hooked_stream_generate
from mlx_hooks.hooks import hooked
from mlx_hooks.interventions import ForwardContext
from mlx_hooks.sae.formats import save_sae
from mlx_hooks.sae.meters import ClampSpec, FeatureMeter, ablate, clamp, clamp_interventions, measure
from mlx_hooks.sae.model import SAE, SAEConfig
from mlx_hooks.sae.search import contrast_latents, latents_at, mean_latent_activations, search_labels
from mlx_hooks.sampling import SamplingSettings
from symbiont_app.cli import main

POINT = "resid_post.1"


def random_sae(architecture="topk", normalisation="none", d_sae=48, seed=0, **kw) -> SAE:
    mx.random.seed(seed)
    cfg = SAEConfig(d_in=64, d_sae=d_sae, architecture=architecture, k=6 if architecture in ("topk", "batchtopk") else None,
                    hook_point=POINT, normalisation=normalisation, input_scale=0.7, **kw)
    sae = SAE(cfg)
    sae.W_dec = mx.random.normal((d_sae, 64)) * 0.3
    sae.b_enc = mx.random.normal((d_sae,)) * 0.2 - 0.2
    sae.b_dec = mx.random.normal((64,)) * 0.1
    if architecture in ("jumprelu", "batchtopk"):
        sae.threshold = mx.random.normal((d_sae,)) * 0.3
    mx.eval(sae.parameters())
    return sae


def orthonormal_sae(d_sae=16, b_enc=10.0, normalisation="none") -> SAE:
    """Orthonormal decoder rows, W_enc = W_decᵀ, a large b_enc: every latent is always active (ReLU)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((64, d_sae)))  # [64, d_sae], orthonormal columns
    sae = SAE(SAEConfig(d_in=64, d_sae=d_sae, architecture="standard", hook_point=POINT, normalisation=normalisation,
                        input_scale=0.4))
    sae.W_dec = mx.array(q.T.astype(np.float32))
    sae.W_enc = mx.array(q.astype(np.float32))
    sae.b_enc = mx.full((d_sae,), b_enc)
    sae.b_dec = mx.array(rng.standard_normal(64).astype(np.float32) * 0.1)
    mx.eval(sae.parameters())
    return sae


def residual_error(sae, x):
    return np.array(x - sae.decode(sae.encode(x)))


# -- clamp algebra ---------------------------------------------------------------------------------
@pytest.mark.parametrize("normalisation", ["none", "constant_scale"])
def test_clamped_latents_read_back_lambda_and_the_error_term_stays(normalisation):
    sae = orthonormal_sae(normalisation=normalisation)
    x = mx.random.normal((1, 9, 64))
    assert (np.array(sae.pre_activations(x)) > 0).all()  # every latent active: the algebra is exact there
    edit = sae.clamp_intervention([3, 7], [2.5, 0.75])
    patched = edit(x, ForwardContext.from_offset(0, 9))
    latents = np.array(sae.encode(patched))
    np.testing.assert_allclose(latents[..., 3], 2.5, atol=1e-4)
    np.testing.assert_allclose(latents[..., 7], 0.75, atol=1e-4)
    others = [i for i in range(16) if i not in (3, 7)]
    np.testing.assert_allclose(latents[..., others], np.array(sae.encode(x))[..., others], atol=1e-4)
    np.testing.assert_allclose(residual_error(sae, patched), residual_error(sae, x), atol=1e-4)


def test_clamp_only_at_chosen_positions_and_ablation():
    sae = orthonormal_sae()
    x = mx.random.normal((1, 8, 64))
    patched = np.array(clamp(sae, 2, 1.5, positions=[2, 5])(x, ForwardContext.from_offset(0, 8)))
    untouched = [0, 1, 3, 4, 6, 7]
    np.testing.assert_array_equal(patched[0, untouched], np.array(x)[0, untouched])
    np.testing.assert_allclose(np.array(sae.encode(mx.array(patched)))[0, [2, 5], 2], 1.5, atol=1e-4)
    ablated = ablate(sae, [4])(x, ForwardContext.from_offset(0, 8))
    np.testing.assert_allclose(np.array(sae.encode(ablated))[..., 4], 0.0, atol=1e-4)
    np.testing.assert_allclose(residual_error(sae, ablated), residual_error(sae, x), atol=1e-4)
    # Ablation removes exactly the latent's own contribution f₄·d₄.
    f4 = np.array(sae.encode(x))[..., 4:5]
    np.testing.assert_allclose(np.array(ablated), np.array(x) - f4 * np.array(sae.W_dec[4]), atol=1e-4)


def test_clamps_in_a_model_absolute_and_max_multiple():
    model, sae = make_tiny_llama(), orthonormal_sae()
    with pytest.raises(ValueError, match="no observed maxima"):
        clamp(sae, 7, 0.5, mode="max_multiple")
    sae.max_activations = np.linspace(1.0, 4.0, 16).astype(np.float32)
    interventions = clamp_interventions(sae, [ClampSpec(3, 2.5), {"latent": 7, "value": 0.5, "mode": "max_multiple"}])
    assert list(interventions) == [POINT]
    with hooked(model, capture=[POINT], interventions=interventions) as session:
        model(mx.array([[5, 60, 70, 80, 90, 33]]))
        captured = session.recorder.stack(POINT)  # recorded after the interventions
    latents = np.array(sae.encode(captured))
    np.testing.assert_allclose(latents[0, :, 3], 2.5, atol=1e-4)
    np.testing.assert_allclose(latents[0, :, 7], 0.5 * sae.max_activations[7], atol=1e-4)
    with pytest.raises(ValueError, match="latent listed twice"):
        clamp_interventions(sae, [ClampSpec(3, 1.0), ClampSpec(3, 2.0)])
    with pytest.raises(ValueError, match="unknown mode 'relative'"):
        clamp(sae, 3, 1.0, mode="relative")
    with pytest.raises(ValueError, match="latent 16 is out of range"):
        clamp(sae, 16, 1.0)


# -- meters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["tap", "numpy", "host", "device"])
def test_meter_readings_per_step(strategy, tokenizer):
    model, sae = make_tiny_llama(), random_sae()
    sae.labels = np.array([f"latent {i}" for i in range(48)])
    meter = FeatureMeter(sae, top_n=4, watch=[1, 2, 30], strategy="host" if strategy == "tap" else strategy)
    attach = meter.generate_kwargs() if strategy == "tap" else {"capture": meter.capture}
    if strategy == "tap":  # the reader must not encode anything itself
        meter.read = lambda x: pytest.fail("the tap's latents were not used")
    steps = list(hooked_stream_generate(model, tokenizer, "hello there", max_tokens=6, sampling=SamplingSettings(temp=0),
                                        readers={"sae": meter}, **attach))
    assert len(steps) == 6
    for step in steps:
        reading = step.readings["sae"]
        direct = np.array(sae.encode(mx.array(step.activations[POINT])[None]))[0]
        assert list(reading.watched) == [1, 2, 30]
        np.testing.assert_allclose(list(reading.watched.values()), direct[[1, 2, 30]], rtol=1e-5, atol=1e-5)
        values = [v.value for v in reading.top]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        expected = [i for i in np.argsort(-direct, kind="stable")[:4] if direct[i] > 0]
        assert [v.index for v in reading.top] == expected
        assert [v.label for v in reading.top] == [f"latent {i}" for i in expected]
        assert reading.l0 == int((direct > 0).sum()) and 0 < reading.l0 <= 6
        assert all(isinstance(v.value, float) and isinstance(v.index, int) for v in reading.top)


@pytest.mark.parametrize("architecture, normalisation", [
    ("standard", "none"), ("topk", "constant_scale"), ("jumprelu", "layer_norm"), ("batchtopk", "constant_norm_rescale"),
])
def test_numpy_meter_encode_equals_the_mlx_encode(architecture, normalisation):
    sae = random_sae(architecture, normalisation, apply_b_dec_to_input=architecture != "jumprelu")
    meter = FeatureMeter(sae, top_n=5, strategy="numpy")
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal(64).astype(np.float32) * 3 + 1
        np.testing.assert_allclose(meter.encode_numpy(x), np.array(sae.encode(mx.array(x)[None]))[0], rtol=1e-4, atol=1e-5)
    sae.W_enc = sae.W_enc * 2  # replaced arrays are picked up
    np.testing.assert_allclose(meter.encode_numpy(x), np.array(sae.encode(mx.array(x)[None]))[0], rtol=1e-4, atol=1e-5)


def test_meter_sees_a_clamp_during_generation(tokenizer):
    model, sae = make_tiny_llama(), orthonormal_sae()
    meter = FeatureMeter(sae, top_n=3, watch=[3])
    kwargs = dict(max_tokens=5, sampling=SamplingSettings(temp=0), readers={"sae": meter})
    free = [s.readings["sae"].watched[3] for s in hooked_stream_generate(model, tokenizer, "abc", **kwargs,
                                                                         **meter.generate_kwargs())]
    clamps = clamp_interventions(sae, [ClampSpec(3, 2.5)])
    pinned = [s.readings["sae"].watched[3] for s in hooked_stream_generate(model, tokenizer, "abc", **kwargs,
                                                                           **meter.generate_kwargs(clamps))]
    np.testing.assert_allclose(pinned, 2.5, atol=1e-4)
    assert all(abs(v - 2.5) > 0.1 for v in free)


def test_tap_changes_nothing_and_follows_chat_turns(tokenizer):
    from mlx_hooks.chat import ChatSession

    model, sae = make_tiny_llama(), random_sae()
    meter = FeatureMeter(sae, top_n=5, watch=[0, 9])
    plain = [s.token for s in hooked_stream_generate(model, tokenizer, "hello", max_tokens=8, sampling=SamplingSettings(temp=0))]
    tapped = [s.token for s in hooked_stream_generate(model, tokenizer, "hello", max_tokens=8, sampling=SamplingSettings(temp=0),
                                                      readers={"sae": meter}, **meter.generate_kwargs())]
    assert tapped == plain
    chat = ChatSession(model, tokenizer)
    for turn in ("hi", "and again"):  # positions run on across turns; the tap restarts with each prompt
        for step in chat.send(turn, max_tokens=4, sampling=SamplingSettings(temp=0), readers={"sae": meter},
                              **meter.generate_kwargs()):
            direct = np.array(sae.encode(mx.array(step.activations[POINT])[None]))[0]
            np.testing.assert_allclose(list(step.readings["sae"].watched.values()), direct[[0, 9]], rtol=1e-5, atol=1e-5)
            assert [v.index for v in step.readings["sae"].top] == [i for i in np.argsort(-direct)[:5] if direct[i] > 0]


def test_meter_errors_and_measure():
    sae = random_sae()
    meter = FeatureMeter(sae, top_n=3)
    with pytest.raises(KeyError, match=r"no activation for 'resid_post\.1'.*capture=meter\.capture"):
        meter({"resid_post.0": mx.zeros((64,))})
    with pytest.raises(ValueError, match="latent 48 is out of range"):
        meter.watch(48)
    meter.watch(5, 6)
    meter.unwatch(5)
    assert meter.watched == (6,)
    with pytest.raises(ValueError, match="unknown meter strategy"):
        FeatureMeter(sae, strategy="gpu")
    timings = measure(sae, steps=10)
    assert set(timings) == {"numpy", "host", "device"} and all(t > 0 for t in timings.values())


# -- search ------------------------------------------------------------------------------------------
def test_search_labels_ranks_exact_word_and_substring_matches():
    labels = ["golden gate bridge", "bridge", "gate keeper", "Golden retriever", "cat", ""]
    assert [m.index for m in search_labels(labels, "bridge")] == [1, 0]
    assert [m.index for m in search_labels(labels, "golden")] == [3, 0]  # equal score: the shorter label first
    assert [m.index for m in search_labels(labels, "gat")] == [2, 0]
    assert [m.index for m in search_labels(labels, "golden bridge")][:3] == [0, 1, 3]
    assert search_labels({7: "Cat facts"}, "CAT")[0].index == 7
    assert search_labels(labels, "zebra") == []
    with pytest.raises(ValueError, match="no labels"):
        search_labels(random_sae(), "x")


def test_latents_active_on_a_chosen_token():
    model, sae = make_tiny_llama(), random_sae()
    with hooked(model, capture=[POINT]) as session:
        model(mx.array([[5, 60, 70, 80, 90, 33]]))
    direct = np.array(sae.encode(session.recorder.stack(POINT)))[0, 4]  # the token at position 4
    found = latents_at(sae, session.recorder, position=4, top_n=20)
    expected = [i for i in np.argsort(-direct, kind="stable") if direct[i] > 0]
    assert [v.index for v in found] == expected and len(expected) > 0
    np.testing.assert_allclose([v.value for v in found], direct[expected], rtol=1e-5)
    assert [v.index for v in latents_at(sae, session.recorder.at(POINT, 4)[0], top_n=2)] == expected[:2]
    with pytest.raises(ValueError, match="give the position"):
        latents_at(sae, session.recorder)


POSITIVE = ["aaaa aaaa aaaa", "aaa aaaaa", "aaaaaaa aa"]
NEGATIVE = ["zzzz zzzz zzzz", "zzz zzzzz", "zzzzzzz zz"]


def contrast_sae(model, tokenizer) -> SAE:
    """Latent 0 reads the direction from the B mean to the A mean, latent 1 the opposite; the rest are faint noise."""
    means = []
    for texts in (POSITIVE, NEGATIVE):
        rows = []
        for text in texts:
            with hooked(model, capture=[POINT]) as session:
                model(mx.array([list(tokenizer.encode(text))]))
            rows.append(np.array(session.recorder.stack(POINT))[0, 1:])
        means.append(np.concatenate(rows).mean(axis=0))
    v = (means[0] - means[1]) / np.linalg.norm(means[0] - means[1])
    middle = float(v @ (means[0] + means[1]) / 2)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8)).astype(np.float32) * 0.01
    w[:, 0], w[:, 1] = 10 * v, -10 * v
    b = np.zeros(8, dtype=np.float32)
    b[0], b[1] = -10 * middle, 10 * middle
    sae = SAE(SAEConfig(d_in=64, d_sae=8, architecture="standard", hook_point=POINT, apply_b_dec_to_input=False))
    sae.W_enc, sae.b_enc, sae.b_dec = mx.array(w), mx.array(b), mx.zeros((64,))
    sae.W_dec = mx.array(w.T.copy())
    mx.eval(sae.parameters())
    return sae


def test_contrast_finds_the_constructed_latents(tokenizer):
    model = make_tiny_llama()
    sae = contrast_sae(model, tokenizer)
    more_a = contrast_latents(sae, model, tokenizer, POSITIVE, NEGATIVE, top_n=3, direction="a")
    more_b = contrast_latents(sae, model, tokenizer, POSITIVE, NEGATIVE, top_n=3, direction="b")
    assert more_a[0].index == 0 and more_b[0].index == 1
    assert all(c.difference > 0 for c in more_a) and all(c.difference < 0 for c in more_b)
    mean_a, n_a = mean_latent_activations(sae, model, tokenizer, POSITIVE)
    assert n_a == sum(len(tokenizer.encode(t)) - 1 for t in POSITIVE)
    assert more_a[0].mean_a == pytest.approx(mean_a[0]) and more_a[0].mean_a > 1.0
    assert more_a[0].difference == pytest.approx(more_a[0].mean_a - more_a[0].mean_b)
    both = contrast_latents(sae, model, tokenizer, POSITIVE, NEGATIVE, top_n=2, direction="both")
    assert {c.index for c in both} == {0, 1}


def test_cli_contrast_and_eval(tmp_path, tokenizer, tiny_folder, capsys):
    model = make_tiny_llama()  # the same weights as tiny_folder (seed 0)
    folder = save_sae(contrast_sae(model, tokenizer), tmp_path / "sae")
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("\n".join(POSITIVE) + "\n")
    neg.write_text("\n".join(NEGATIVE) + "\n")
    assert main(["sae", "search", str(folder), "--contrast", str(pos), str(neg), "--model", str(tiny_folder), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"more active on {pos}" and out[2].split()[0] == "0"
    second = out.index(f"more active on {neg}")
    assert out[second + 2].split()[0] == "1"
    text = tmp_path / "held_out.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 4)
    assert main(["sae", "eval", str(folder), "--model", str(tiny_folder), "--text", str(text), "--context", "32"]) == 0
    out = capsys.readouterr().out
    fvu = float(out.split("FVU")[1].split()[0])
    assert np.isfinite(fvu) and "L0" in out and "dead latents" in out and "loss recovered" in out
    assert main(["sae", "eval", str(folder), "--model", str(tiny_folder), "--text", str(tmp_path / "none.txt")]) == 1
    assert "none.txt: file not found" in capsys.readouterr().err
