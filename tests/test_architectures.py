"""One test matrix over every supported architecture family (tiny random models).

Each invariant is what TransformerLens users rely on: hooks change nothing unless asked,
``attn_out``/``mlp_out`` are exactly what is added to the residual stream, a self-patch
is a no-op at every point kind, the lens at the last layer is the model's own output.
Adding an architecture to ``mlx_hooks/architectures.py`` means adding it to
``tests/tiny_models.py``; every test here then runs on it.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_byte_tokenizer
from tiny_models import ARCHITECTURES, CONFIGS, make_model

from mlx_hooks import ChatSession, FunctionIntervention, hook_points, hooked, hooked_stream_generate
from mlx_hooks.activation_cache import ActivationRecorder
from mlx_hooks.architectures import dims_from_config, dims_of
from mlx_hooks.errors import ContextLengthError
from mlx_hooks.interventions import AddVector, Patch
from mlx_hooks.lens import lens_logprobs
from mlx_hooks.points import ModelAdapter

TOKENS = [12, 80, 33, 7, 101, 55, 3, 240, 17, 64, 9, 130]
OTHER = [40, 2, 77, 150, 8, 91, 200, 5, 66, 31, 120, 44]
KINDS = ("embed", "resid_pre", "attn_z", "attn_out", "mlp_hidden", "mlp_out", "resid_post")
_MODELS: dict[str, object] = {}


def _model(arch: str):
    if arch not in _MODELS:
        _MODELS[arch] = make_model(arch)
    return _MODELS[arch]


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tokenizer():
    return make_byte_tokenizer()


def _forward(model, tokens=TOKENS, capture=(), interventions=None):
    with hooked(model, capture=capture, interventions=interventions) as session:
        logits = model(mx.array([tokens]))
        mx.eval(logits)
    return np.array(logits[0]), {p: np.array(session.recorder.stack(p)[0]) for p in capture}


def _point(model, kind: str, layer: int = 1) -> str | None:
    """The ``kind`` point at ``layer`` (or the first layer that has it: MoE layers have no mlp_hidden)."""
    if kind == "embed":
        return "embed"
    names = hook_points(model)
    for i in [layer, *range(ModelAdapter(model).n_layers)]:
        if f"{kind}.{i}" in names:
            return f"{kind}.{i}"
    return None


def test_hooked_with_every_point_captured_and_identity_interventions_equals_unhooked(arch):
    model = _model(arch)
    plain = np.array(model(mx.array([TOKENS]))[0])
    points = hook_points(model)
    identity = {p: FunctionIntervention(lambda x, ctx: x) for p in points}
    hooked_logits, cached = _forward(model, capture=points, interventions=identity)
    assert np.array_equal(hooked_logits, plain)
    assert set(cached) == set(points)
    adapter = ModelAdapter(model)
    for point in points:  # every capture has the width its point promises
        assert cached[point].shape == (len(TOKENS), adapter.width(point)), point


def test_residual_is_the_sum_of_what_attention_and_mlp_add(arch):
    model = _model(arch)
    adapter = ModelAdapter(model)
    _, c = _forward(model, capture=hook_points(model))
    for i in range(adapter.n_layers):
        delta = c[f"resid_post.{i}"] - c[f"resid_pre.{i}"]
        parts = c[f"attn_out.{i}"] + c[f"mlp_out.{i}"]
        scale = np.abs(delta).max()
        assert scale > 0.1  # the blocks really move the residual
        np.testing.assert_allclose(parts, delta, atol=1e-5 * max(scale, 1.0), err_msg=f"block {i}")
        if i:
            assert np.array_equal(c[f"resid_pre.{i}"], c[f"resid_post.{i - 1}"])
    # embed is the raw token embedding; the first block receives it times the family's scale
    table = np.array(adapter.backbone["embed_tokens"].weight)
    assert np.array_equal(c["embed"], table[TOKENS])
    np.testing.assert_allclose(c["resid_pre.0"], c["embed"] * adapter.dims.embed_scale, rtol=1e-6)
    expected_scale = math.sqrt(adapter.d_model) if arch.startswith("gemma") else 1.0
    assert adapter.dims.embed_scale == pytest.approx(expected_scale, rel=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_patching_a_point_with_its_own_cached_value_is_a_no_op(arch, kind):
    model = _model(arch)
    point = _point(model, kind)
    if point is None:
        assert kind == "mlp_hidden" and arch == "mixtral"  # mixture of experts only: no single hidden layer
        return
    clean, cached = _forward(model, capture=[point])
    patched, _ = _forward(model, interventions={point: Patch(mx.array(cached[point]))})
    assert np.array_equal(patched, clean)
    # and the hook is live: another prompt's value at the same point changes the logits
    _, other = _forward(model, tokens=OTHER, capture=[point])
    changed, _ = _forward(model, interventions={point: Patch(mx.array(other[point]))})
    assert np.abs(changed - clean).max() > 1e-3


def test_lens_at_the_last_layer_is_the_models_own_output(arch):
    model = _model(arch)
    adapter = ModelAdapter(model)
    last = f"resid_post.{adapter.n_layers - 1}"
    logits, c = _forward(model, capture=[last])
    reference = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
        -1, keepdims=True)
    lens = np.array(lens_logprobs(model, mx.array(c[last])))
    np.testing.assert_allclose(lens, reference, atol=1e-4)
    if adapter.dims.final_logit_softcap:  # the cap really matters on this model
        uncapped = np.array(adapter.unembed(adapter.final_norm(mx.array(c[last]))))
        assert np.abs(uncapped - logits).max() > 0.5


def test_masked_steering_changes_only_the_masked_positions(arch):
    model = _model(arch)
    adapter = ModelAdapter(model)
    vector = mx.array(np.random.default_rng(0).standard_normal(adapter.d_model).astype(np.float32))
    clean, base = _forward(model, capture=["resid_post.1"])
    steered, got = _forward(model, capture=["resid_post.1"],
                            interventions={"resid_post.1": AddVector(vector, 4.0, positions=[5])})
    delta = got["resid_post.1"] - base["resid_post.1"]
    np.testing.assert_allclose(delta[5], 4.0 * np.array(vector), rtol=1e-5, atol=1e-5)
    assert np.abs(np.delete(delta, 5, axis=0)).max() == 0
    assert np.array_equal(steered[:5], clean[:5])  # causal: earlier positions cannot see it
    assert np.abs(steered[5] - clean[5]).max() > 1e-3


def test_streamed_capture_equals_a_full_forward(arch, tokenizer):
    model = _model(arch)
    points = hook_points(model)  # every point: widths D, H·Dh and d_mlp in one step
    recorder = ActivationRecorder()
    # 12 prompt + 10 generated tokens: past the tiny Gemma 3's 8-token sliding window
    steps = list(hooked_stream_generate(model, tokenizer, TOKENS, max_tokens=10, capture=points, recorder=recorder))
    full = TOKENS + [s.token for s in steps]
    _, reference = _forward(model, tokens=full, capture=points)
    for step in steps:  # each step's own copy: the activation at the position that chose its token
        for point in points:
            np.testing.assert_array_equal(step.activations[point], np.array(recorder.stack(point)[0, step.position - 1]))
    for point in points:
        assert recorder.positions(point).tolist() == list(range(len(full)))
        np.testing.assert_allclose(np.array(recorder.stack(point)[0]), reference[point], rtol=1e-4, atol=1e-4,
                                   err_msg=point)


def test_second_chat_turn_reuses_the_cache_and_matches_a_fresh_generation(arch, tokenizer):
    model = _model(arch)
    chat = ChatSession(model, tokenizer)
    list(chat.send("Hi", max_tokens=4))
    second = [s.token for s in chat.send("More", max_tokens=4)]
    prompt = list(tokenizer.apply_chat_template([*chat.messages[:-1]], add_generation_prompt=True, tokenize=True))
    fresh = [s.token for s in hooked_stream_generate(model, tokenizer, prompt, max_tokens=4)]
    assert second == fresh


def test_context_guard_knows_every_familys_context_length(arch, tokenizer):
    model = _model(arch)
    dims = dims_of(model)
    config = CONFIGS[arch]
    from_config = dims_from_config(config)
    # mlx-lm's gemma / gemma2 / mixtral ModelArgs drop max_position_embeddings: the family's published length stands in
    assert dims.context_length == {"gemma": 8192, "gemma2": 8192, "mixtral": 32768}.get(arch, 512)
    assert from_config.context_length == 512
    assert (from_config.d_model, from_config.n_layers, from_config.n_heads, from_config.d_mlp) == (
        dims.d_model, dims.n_layers, dims.n_heads, dims.d_mlp)
    with pytest.raises(ContextLengthError, match=str(dims.context_length)):
        next(hooked_stream_generate(model, tokenizer, [5] * dims.context_length, max_tokens=2))


# -- SAEs, meters, clamps, presets on every family ----------------------------------------------


def _random_sae(model, point: str, d_sae: int = 24, seed: int = 0):
    from mlx_hooks.sae.model import SAE, SAEConfig

    d_in = ModelAdapter(model).width(point)
    mx.random.seed(seed)
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture="standard", hook_point=point))
    sae.W_dec = mx.random.normal((d_sae, d_in)) / math.sqrt(d_in)
    sae.b_enc = mx.random.normal((d_sae,)) * 0.1 + 0.5  # most latents active
    mx.eval(sae.parameters())
    return sae


@pytest.mark.parametrize("kind", ["resid_post", "mlp_out", "attn_z"])
def test_meters_read_the_point_and_a_clamp_moves_exactly_its_decoder_direction(arch, kind, tokenizer):
    from mlx_hooks.sae.meters import ClampSpec, FeatureMeter, clamp_interventions

    model = _model(arch)
    point = _point(model, kind)
    sae = _random_sae(model, point)
    meter = FeatureMeter(sae, top_n=3, watch=[0, 5])
    steps = list(hooked_stream_generate(model, tokenizer, TOKENS, max_tokens=4, readers={"sae": meter},
                                        **meter.generate_kwargs()))
    for step in steps:  # the reading is the SAE's encoding of the activation that chose the token
        direct = np.array(sae.encode(mx.array(step.activations[point])[None]))[0]
        np.testing.assert_allclose(list(step.readings["sae"].watched.values()), direct[[0, 5]], rtol=1e-4, atol=1e-4)
    # clamp latent 5 to λ: x ← x + d_5·(λ − f_5(x)), the SAE's error term untouched
    _, base = _forward(model, capture=[point])
    _, got = _forward(model, capture=[point], interventions=clamp_interventions(sae, [ClampSpec(5, 7.0)]))
    f5 = np.array(sae.encode(mx.array(base[point])))[:, 5]  # [T]
    expected = (7.0 - f5)[:, None] * np.array(sae.W_dec[5])[None]
    np.testing.assert_allclose(got[point] - base[point], expected, rtol=1e-4, atol=1e-4)


def test_sae_training_and_loss_recovered_are_well_defined(arch, tokenizer, tmp_path):
    from mlx_hooks.sae.activations import activations_at
    from mlx_hooks.sae.evaluate import evaluate_sae
    from mlx_hooks.sae.model import SAEConfig
    from mlx_hooks.sae.train import TopKTrainer, TrainConfig

    model = _model(arch)
    point = "resid_post.1"
    windows = np.random.default_rng(1).integers(0, 256, size=(16, 16)).astype(np.int32)
    rows = np.array(activations_at(model, mx.array(windows), point)).reshape(-1, ModelAdapter(model).d_model)
    config = TrainConfig(steps=60, d_sae=32, k=4, batch_size=64, lr=3e-3, aux_k=8, dead_after_tokens=2000,
                         warmup_steps=5, checkpoint_every=1000, report_every=20)
    trainer = TopKTrainer(SAEConfig(d_in=rows.shape[1], d_sae=32, k=4, hook_point=point), config,
                          rows.astype(np.float32), tmp_path)
    sae = trainer.train()
    result = evaluate_sae(model, sae, windows[:4])
    zero, spliced, clean = result.zero_ablation_loss, result.sae_loss, result.clean_loss
    assert all(math.isfinite(v) for v in (zero, spliced, clean, result.variance_explained))
    if math.isnan(result.loss_recovered):
        assert abs(zero - clean) < 1e-3
    else:  # exactly the ratio as defined, whatever the signs
        assert math.isfinite(result.loss_recovered)
        assert result.loss_recovered == pytest.approx((zero - spliced) / (zero - clean), rel=1e-5, abs=1e-6)


def test_presets_and_control_vectors_carry_the_familys_layers(arch, tmp_path):
    import gguf

    from mlx_hooks.control_vector import export_preset_control_vector
    from mlx_hooks.fingerprint import fingerprint_model
    from mlx_hooks.preset_apply import import_preset
    from mlx_hooks.presets import Preset, SteeringEntry, write_preset
    from mlx_hooks.steering import SteeringVector

    model = _model(arch)
    adapter = ModelAdapter(model)
    direction = np.random.default_rng(2).standard_normal(adapter.d_model).astype(np.float32)
    vector = SteeringVector("v", "resid_post.1", direction, typical_norm=3.0)
    fingerprint = fingerprint_model(model)
    preset = Preset(name="p", target_model_name=arch, fingerprint=fingerprint,
                    interventions=[SteeringEntry("v", "resid_post.1", 2.0, False, "all")], vectors={"v": vector})
    write_preset(tmp_path / "p.symbiont-preset", preset)
    applied = import_preset(tmp_path / "p.symbiont-preset", model, fingerprint)
    assert applied.compatibility.status == "exact"
    _, base = _forward(model, capture=["resid_post.1"])
    _, got = _forward(model, capture=["resid_post.1"], interventions=applied.interventions)
    np.testing.assert_allclose(got["resid_post.1"] - base["resid_post.1"],
                               np.broadcast_to(2.0 * vector.unit(), base["resid_post.1"].shape), atol=1e-4)

    export_preset_control_vector(tmp_path / "cv.gguf", preset)
    reader = gguf.GGUFReader(str(tmp_path / "cv.gguf"))
    assert reader.fields["controlvector.layer_count"].contents() == adapter.n_layers - 1
    assert reader.fields["controlvector.model_hint"].contents() == adapter.arch.gguf_name
    assert sorted(t.name for t in reader.tensors) == [f"direction.{n}" for n in range(1, adapter.n_layers)]


def test_a_saved_folder_loads_with_its_estimate_and_fingerprint(arch, tmp_path):
    from mlx_hooks.fingerprint import fingerprint_model
    from mlx_hooks.loader import load_model
    from tiny_models import save_model_folder

    folder = save_model_folder(tmp_path / arch, arch)
    loaded = load_model(str(folder), runtime_dtype="float32", memory_budget_bytes=None, context_tokens=64)
    model = make_model(arch)  # the same seed: the weights save_model_folder wrote
    assert loaded.fingerprint == fingerprint_model(model)
    assert np.array_equal(np.array(loaded.model(mx.array([TOKENS]))), np.array(model(mx.array([TOKENS]))))
    dims = dims_of(model)
    per_token = 2 * dims.n_kv_heads * dims.head_dim * 4  # K and V, float32
    cached = 64 * dims.n_layers
    if dims.sliding_window:  # the tiny Gemma 3 keeps 8 tokens in every other layer
        cached = 64 * (dims.n_layers // dims.global_every) + 8 * (dims.n_layers - dims.n_layers // dims.global_every)
    assert loaded.estimate.kv_cache_bytes == per_token * cached


def test_an_architecture_the_hooks_do_not_know_is_refused_at_load_naming_the_file(tmp_path):
    import json

    from mlx_hooks.errors import ModelLoadError
    from mlx_hooks.loader import load_model
    from tiny_models import save_model_folder

    folder = save_model_folder(tmp_path / "m", "llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "olmo2"}))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), memory_budget_bytes=None)
    message = str(info.value)
    assert str(folder / "config.json") in message and "'olmo2'" in message and "gemma2" in message


def test_models_info_describes_the_family(tmp_path, capsys):
    from symbiont_app.cli import main
    from tiny_models import save_model_folder

    folder = save_model_folder(tmp_path / "g3", "gemma3")
    assert main(["models", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "decoder at language_model.model" in out
    assert "attn_out read at post_attention_layernorm (after self_attn)" in out
    assert "attn_z [H·Dh=64], mlp_hidden [d_mlp=128]" in out and "× 8" in out
