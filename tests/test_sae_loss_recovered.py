"""loss recovered = (zero − sae) / (zero − clean): signed as written, NaN where undefined, printable.

The bug this guards: the denominator used to be clamped to max(zero − clean, 1e-12), so a
model whose loss *drops* when the point is zeroed (untrained and tiny models often) got
(zero − sae) / 1e-12 ≈ −6.5e10.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from conftest import make_byte_tokenizer, make_tiny_llama

from mlx_hooks.sae.activations import token_windows
from mlx_hooks.sae.evaluate import LOSS_RECOVERED_TOLERANCE, evaluate_sae, format_loss_recovered, loss_recovered
from mlx_hooks.sae.model import SAE, SAEConfig

POINT = "mlp_out.1"


def test_the_ratio_keeps_its_sign_when_zero_ablation_beats_the_clean_model():
    clean, zero = 5.0, 4.0  # zero ablation is *better*: a negative denominator
    assert loss_recovered(clean, spliced=5.0, zeroed=zero) == pytest.approx(1.0)  # splice as good as clean
    assert loss_recovered(clean, spliced=4.0, zeroed=zero) == pytest.approx(0.0)  # as good as zero ablation
    assert loss_recovered(clean, spliced=4.5, zeroed=zero) == pytest.approx(0.5)
    assert loss_recovered(clean, spliced=6.0, zeroed=zero) == pytest.approx(2.0)  # (4 − 6) / (4 − 5)
    assert loss_recovered(clean, spliced=3.5, zeroed=zero) == pytest.approx(-0.5)
    assert loss_recovered(4.0, spliced=4.5, zeroed=5.0) == pytest.approx(0.5)  # the usual orientation


def test_undefined_where_zero_ablation_changes_nothing_measurable():
    clean = 5.0
    tiny = LOSS_RECOVERED_TOLERANCE * clean / 2
    assert math.isnan(loss_recovered(clean, spliced=5.3, zeroed=clean))
    assert math.isnan(loss_recovered(clean, spliced=5.3, zeroed=clean + tiny))
    assert math.isnan(loss_recovered(clean, spliced=5.3, zeroed=clean - tiny))
    assert math.isfinite(loss_recovered(clean, spliced=5.3, zeroed=clean + 4 * tiny))
    assert math.isnan(loss_recovered(clean, spliced=5.3, zeroed=math.inf))
    assert format_loss_recovered(math.nan).startswith("n/a")
    assert format_loss_recovered(None).startswith("n/a")
    assert format_loss_recovered(0.98765) == "0.9877"


def _fitted_llama(windows: np.ndarray):
    """A tiny llama fitted briefly to the text, so its layers matter for the loss."""
    model = make_tiny_llama(tie_word_embeddings=False)
    batch = mx.array(windows)
    step = nn.value_and_grad(model, lambda m: nn.losses.cross_entropy(m(batch)[:, :-1], batch[:, 1:], reduction="mean"))
    optimizer = optim.Adam(learning_rate=3e-3)
    for _ in range(40):
        _, grads = step(model)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    return model


def _scaled_identity(d: int, scale: float) -> SAE:
    """x̂ = scale·x exactly: relu(x) − relu(−x) = x, decoded times ``scale``."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="standard", hook_point=POINT, apply_b_dec_to_input=False))
    eye = mx.eye(d)
    sae.W_enc = mx.concatenate([eye, -eye], axis=1)
    sae.W_dec = mx.concatenate([eye, -eye], axis=0) * scale
    sae.b_enc, sae.b_dec = mx.zeros((2 * d,)), mx.zeros((d,))
    return sae


@pytest.fixture(scope="module")
def windows():
    return token_windows(make_byte_tokenizer(), ["the quick brown fox jumps over the lazy dog " * 10], 24)


def test_evaluation_when_zero_ablation_lowers_the_loss(windows):
    model = _fitted_llama(windows)
    mlp = model.model.layers[1].mlp
    mlp.down_proj.weight = mlp.down_proj.weight * -6.0  # the block's MLP now hurts: removing it helps
    mx.eval(model.parameters())
    perfect = evaluate_sae(model, _scaled_identity(64, 1.0), windows)
    assert perfect.zero_ablation_loss < perfect.clean_loss - 0.05  # the case the old clamp got wrong
    assert perfect.sae_loss == pytest.approx(perfect.clean_loss, rel=1e-4)
    assert perfect.loss_recovered == pytest.approx(1.0, abs=1e-3)  # was (zero − clean)/1e-12 ≈ −1e11
    useless = evaluate_sae(model, _scaled_identity(64, 0.0), windows)
    assert useless.loss_recovered == pytest.approx(0.0, abs=1e-3)
    half = evaluate_sae(model, _scaled_identity(64, 0.5), windows)
    expected = (half.zero_ablation_loss - half.sae_loss) / (half.zero_ablation_loss - half.clean_loss)
    assert math.isfinite(half.loss_recovered) and half.loss_recovered == pytest.approx(expected, rel=1e-6)
    assert json.loads(json.dumps(half.to_dict(), allow_nan=False))["loss_recovered"] == pytest.approx(expected)


def test_evaluation_is_nan_where_the_point_does_not_matter_and_prints_as_n_a(windows, capsys, monkeypatch):
    model = _fitted_llama(windows)
    mlp = model.model.layers[1].mlp
    mlp.down_proj.weight = mx.zeros_like(mlp.down_proj.weight)  # mlp_out.1 is 0: zeroing it changes nothing
    mx.eval(model.parameters())
    result = evaluate_sae(model, _scaled_identity(64, 0.5), windows)
    assert result.zero_ablation_loss == pytest.approx(result.clean_loss, abs=1e-6)
    assert math.isnan(result.loss_recovered)
    record = result.to_dict()
    assert record["loss_recovered"] is None and json.loads(json.dumps(record, allow_nan=False)) == record

    # The CLI's printer: `symbiont sae eval` shows "n/a", never crashes or prints nan.
    import mlx_hooks.sae.evaluate as evaluate_module
    from symbiont_app.commands import sae as sae_command

    monkeypatch.setattr(sae_command, "_loaded_model", lambda args: SimpleNamespace(model=model, tokenizer=None))
    monkeypatch.setattr(sae_command, "_load", lambda args, loaded: None)
    monkeypatch.setattr(sae_command, "read_texts", lambda path, one_per_line: ["x"])
    monkeypatch.setattr("mlx_hooks.sae.activations.token_windows", lambda tok, texts, n: windows)
    monkeypatch.setattr(evaluate_module, "evaluate_sae", lambda *a, **k: result)
    args = SimpleNamespace(text="held.txt", context=24, max_windows=0)
    assert sae_command.cmd_eval(args) == 0
    out = capsys.readouterr().out
    assert "loss recovered       n/a" in out and "nan" not in out.lower()
