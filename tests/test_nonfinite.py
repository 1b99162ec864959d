"""Non-finite numbers never pass silently: sampling settings, interventions that break the residual
stream during generation, and weight files at load."""

from __future__ import annotations

import math
import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_hooks import AddVector, hooked, hooked_stream_generate
from mlx_hooks.errors import NonFiniteError
from mlx_hooks.sampling import SamplingSettings


@pytest.mark.parametrize("field, value, message", [
    ("temp", math.nan, "temp must be a finite number >= 0"),
    ("temp", math.inf, "temp must be a finite number >= 0"),
    ("temp", -0.5, "temp must be a finite number >= 0"),
    ("top_p", math.nan, "top_p must lie in [0, 1]"),
    ("top_p", 1.5, "top_p must lie in [0, 1]"),
    ("min_p", math.nan, "min_p must lie in [0, 1]"),
    ("top_k", -1, "top_k must be a whole number >= 0"),
    ("top_k", 2.5, "top_k must be a whole number >= 0"),
    ("seed", -1, "seed must be a whole number in [0, 2^64)"),
    ("seed", 2**64, "seed must be a whole number in [0, 2^64)"),
])
def test_invalid_sampling_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SamplingSettings(**{field: value})


def test_valid_edges_are_accepted():
    SamplingSettings(temp=0.0, top_p=1.0, min_p=1.0, top_k=0, seed=0)
    SamplingSettings(temp=2.0, top_p=0.0, seed=2**64 - 1)


def _generate(tiny_model, tokenizer, interventions, tokens=4):
    return [s.token for s in hooked_stream_generate(tiny_model, tokenizer, "hello", max_tokens=tokens,
                                                    interventions=interventions)]


@pytest.mark.parametrize("scale", [1e30, math.nan, math.inf])
def test_an_intervention_that_breaks_the_residual_stops_generation(tiny_model, tokenizer, scale):
    """A coefficient of 1e30 is a finite number, but its squared norm is not (float32 ends at 3.4e38):
    the next RMSNorm divided by inf and the model answered from zeros (end-of-text ×8)."""
    d = tiny_model.args.hidden_size
    steer = AddVector(mx.ones((d,)) / math.sqrt(d), scale)
    with pytest.raises(NonFiniteError, match=r"resid_post\.1 non-finite .*generation stopped.*AddVector"):
        _generate(tiny_model, tokenizer, {"resid_post.1": steer})
    # the model is left unhooked and usable
    assert all(not hasattr(layer, "_session") for layer in tiny_model.model.layers)


def test_strong_but_representable_steering_runs(tiny_model, tokenizer):
    d = tiny_model.args.hidden_size
    plain = _generate(tiny_model, tokenizer, None)
    steered = _generate(tiny_model, tokenizer, {"resid_post.1": AddVector(mx.ones((d,)) / math.sqrt(d), 1e4)})
    assert len(plain) == len(steered) == 4


def test_flags_are_only_kept_when_someone_checks(tiny_model):
    d = tiny_model.args.hidden_size
    with hooked(tiny_model, interventions={"resid_post.0": AddVector(mx.ones((d,)), 1e30)}) as session:
        tiny_model(mx.array([[1, 2, 3]]))
        assert session._edited == []  # outside generation nothing is held
        session.check_finite()
        session.watch_finite = True
        out = tiny_model(mx.array([[1, 2, 3]]))
        mx.eval(out)
        with pytest.raises(NonFiniteError):
            session.check_finite()
        session.check_finite()  # the flags were consumed
    assert np.isfinite(np.array(tiny_model(mx.array([[1, 2, 3]])))).all()


# -- SAE files ----------------------------------------------------------------------------------------
def _saelens(tmp_path, cfg_changes=None, weight_changes=None):
    from test_sae_formats import D_IN, D_SAE, weights, write_saelens

    w = weights(np.random.default_rng(0))
    for name, edit in (weight_changes or {}).items():
        edit(w[name])
    cfg = {"architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": 5, "hook_name": "blocks.1.hook_resid_post",
           **(cfg_changes or {})}
    return write_saelens(tmp_path / "sae", cfg, w)


@pytest.mark.parametrize("name, value", [("W_enc", np.nan), ("W_dec", np.inf), ("b_enc", -np.inf), ("b_dec", np.nan)])
def test_sae_weights_with_nan_or_inf_are_refused_naming_the_file_and_tensor(tmp_path, name, value):
    from mlx_hooks.errors import SAELoadError
    from mlx_hooks.sae.formats import load_sae

    def poison(array):
        array.reshape(-1)[3] = value

    folder = _saelens(tmp_path, weight_changes={name: poison})
    with pytest.raises(SAELoadError, match=rf"sae_weights\.safetensors: weights hold NaN or infinite values \({name} 1 of"):
        load_sae(folder)


@pytest.mark.parametrize("change, message", [
    ({"d_in": "16"}, "d_in must be a whole number >= 1, got '16'"),
    ({"d_sae": 24.0}, "d_sae must be a whole number >= 1, got 24.0"),
    ({"d_in": "576x"}, "d_in must be a whole number >= 1, got '576x'"),
    ({"k": 25}, "k must be a whole number from 1 to d_sae (24), got 25"),
    ({"k": "5"}, "k must be a whole number from 1 to d_sae (24), got '5'"),
])
def test_sae_config_values_of_the_wrong_type_or_range_are_refused_at_load(tmp_path, change, message):
    from mlx_hooks.errors import SAELoadError
    from mlx_hooks.sae.formats import load_sae

    folder = _saelens(tmp_path, cfg_changes=change)
    with pytest.raises(SAELoadError) as info:
        load_sae(folder)
    assert str(folder / "cfg.json") in str(info.value) and message in str(info.value), str(info.value)


# -- model weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_model_weights_with_nan_or_inf_are_refused_at_load(tmp_path, value):
    from conftest import save_tiny_folder
    from safetensors.numpy import load_file, save_file

    from mlx_hooks.errors import ModelLoadError
    from mlx_hooks.loader import load_model

    folder = save_tiny_folder(tmp_path / "model")
    files = sorted(folder.glob("*.safetensors"))
    tensors = load_file(str(files[0]))
    name = next(k for k in sorted(tensors) if k.endswith("mlp.down_proj.weight"))
    tensors[name].reshape(-1)[7] = value
    save_file(tensors, str(files[0]), metadata={"format": "mlx"})
    with pytest.raises(ModelLoadError, match=rf"weights hold NaN or infinite values \({re.escape(name)} 1 of \d+\)"):
        load_model(str(folder))


def test_half_precision_weights_with_large_finite_sums_pass():
    from mlx_hooks.weights_check import nonfinite_parameters

    class Holder:
        def parameters(self):
            return {"w": mx.full((64, 4096), 30.0, dtype=mx.float16)}  # rows sum to 122880: past float16, yet finite

    assert nonfinite_parameters(Holder()) == []
