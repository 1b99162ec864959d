"""Presets' SAE clamps resolve to real SAEs found by id (SYMBIONT_SAE_PATH, user folder, shipped)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_hooks.errors import SAELoadError
from mlx_hooks.loader import load_model
from mlx_hooks.sae.formats import save_sae
from mlx_hooks.sae.model import SAE, SAEConfig
from mlx_hooks.sae.registry import SHIPPED_DIR, find_saes, make_resolver


@pytest.fixture()
def tiny_sae_dir(tmp_path, tiny_folder, monkeypatch):
    loaded = load_model(str(tiny_folder))
    mx.random.seed(1)
    sae = SAE(SAEConfig(d_in=64, d_sae=128, architecture="topk", k=4, hook_point="resid_post.1",
                        sae_id="tiny/resid_post.1/topk-128", model_fingerprint=loaded.fingerprint.to_dict()))
    save_sae(sae, tmp_path / "saes" / "tiny-sae")
    monkeypatch.setenv("SYMBIONT_SAE_PATH", str(tmp_path / "saes"))
    return loaded, tmp_path / "saes" / "tiny-sae"


def test_find_and_resolve_by_id(tiny_sae_dir):
    loaded, folder = tiny_sae_dir
    found = find_saes()
    assert found["tiny/resid_post.1/topk-128"] == folder
    resolve = make_resolver(loaded)
    sae = resolve("tiny/resid_post.1/topk-128")
    assert sae.cfg.d_sae == 128 and resolve("tiny/resid_post.1/topk-128") is sae  # cached
    with pytest.raises(SAELoadError, match=r"SAE 'nope' not found .*found: .*tiny/resid_post\.1/topk-128"):
        resolve("nope")


def test_shipped_sae_is_found_by_id():
    found = find_saes([SHIPPED_DIR])
    assert "SmolLM2-135M-Instruct/resid_post.15/topk-4608-k32" in found


def test_preset_with_an_sae_clamp_imports_from_the_cli(tiny_sae_dir, tmp_path, tiny_folder, capsys):
    from mlx_hooks.presets import Preset, SaeClampEntry, write_preset
    from symbiont_app.cli import main

    loaded, _ = tiny_sae_dir
    preset = Preset(name="clamp", target_model_name="tiny", fingerprint=loaded.fingerprint, interventions=[
        SaeClampEntry(sae_id="tiny/resid_post.1/topk-128", hook_point="resid_post.1", latent=5, label="x", value=3.0),
    ])
    path = tmp_path / "clamp.symbiont-preset"
    write_preset(path, preset)
    assert main(["preset", "import", str(path), "--model", str(tiny_folder)]) == 0
    assert "ok: 1 intervention(s) at resid_post.1" in capsys.readouterr().out
    bad = Preset(name="bad", target_model_name="tiny", fingerprint=loaded.fingerprint, interventions=[
        SaeClampEntry(sae_id="missing/sae", hook_point="resid_post.1", latent=5, label="x", value=3.0),
    ])
    write_preset(tmp_path / "bad.symbiont-preset", bad)
    assert main(["preset", "import", str(tmp_path / "bad.symbiont-preset"), "--model", str(tiny_folder)]) == 1
    assert "missing/sae" in capsys.readouterr().err
