"""Subliminal lab, constrained teachers: the token mask, the filter-format grammar, the config setting."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from conftest import make_byte_tokenizer, make_untied_llama
from mlx_hooks.fingerprint import fingerprint_model
from symbiont_lab.subliminal.config import ConfigError, config_from_dict, config_to_dict, parse_config
from symbiont_lab.subliminal.constrained import (ALLOWED_CHARACTERS, FilterFormat, NumbersOnly, format_prefix_ok,
                                                 make_logits_processors)
from symbiont_lab.subliminal.filter import rejection_reason
from symbiont_lab.subliminal.numbers import generate_responses
from symbiont_lab.subliminal.prompts import make_number_prompts
from symbiont_lab.subliminal.run import RunFolder, RunFolderError
from symbiont_lab.subliminal.teacher import TraitSpec


@pytest.fixture(scope="module")
def tokenizer():
    return make_byte_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    model = make_untied_llama()
    return SimpleNamespace(model=model, tokenizer=tokenizer, fingerprint=fingerprint_model(model))


def expected_allowed(tokenizer) -> set[int]:
    ids = {tokenizer.encode(c, add_special_tokens=False)[0] for c in "0123456789,; \n"}
    return ids | set(tokenizer.eos_token_ids)


def test_numbers_only_masks_exactly_the_disallowed_ids(tokenizer):
    processor = NumbersOnly(tokenizer)
    assert processor.vocab_size == 259  # 256 bytes + 3 special tokens
    allowed = expected_allowed(tokenizer)
    assert set(processor.allowed_ids) == allowed and len(allowed) == 15
    # a padded output head (V > vocabulary): the padding ids are masked too
    logits = mx.random.normal((1, 300), key=mx.random.key(0))
    out = np.array(processor(mx.array([[1, 2, 3]]), logits))
    original = np.array(logits)
    finite = set(np.flatnonzero(np.isfinite(out)).tolist())
    assert finite == allowed
    assert np.array_equal(out[0, sorted(allowed)], original[0, sorted(allowed)])  # untouched where allowed
    assert np.all(out[0, [i for i in range(300) if i not in allowed]] == -np.inf)
    assert make_logits_processors("free", tokenizer)() == []
    with pytest.raises(ValueError, match="unknown decoding 'regex'"):
        make_logits_processors("regex", tokenizer)


def test_format_prefix_follows_the_filter():
    for text in ("", "1", "12, 3", "12, ", "12,", "1\n2\n", "999", "1;2;3", "1 2 3 4 5 6 7 8 9 10"):
        assert format_prefix_ok(text), text
    for text in (" 1", "1234", "1, 2 3", "1, 2,3", "1,,", "1    ", "1 2 3 4 5 6 7 8 9 10 ", "1, 2.", "a"):
        assert not format_prefix_ok(text), text
    # every complete, accepted text is a prefix the grammar allows, and the converse for texts ending in digits
    for text in ("1", "12, 3", "1\n\n2", "7;8", "1 2 3 4 5 6 7 8 9 10"):
        assert format_prefix_ok(text) and rejection_reason(text) is None




def test_constrained_generation_emits_only_allowed_tokens(tiny):
    prompts = make_number_prompts(6, seed=1)
    free = dict(generate_responses(tiny, TraitSpec("none"), prompts, batch_size=3, max_tokens=16, seed=2,
                                   temperature=1.5))
    # the random model writes other bytes when free, so the mask has something to remove
    assert any(set(text) - ALLOWED_CHARACTERS for text in free.values())
    constrained = dict(generate_responses(tiny, TraitSpec("none"), prompts, batch_size=3, max_tokens=16, seed=2,
                                          temperature=1.5, decoding="constrained"))
    assert sorted(constrained) == list(range(6))
    allowed_text_ids = expected_allowed(tiny.tokenizer) - set(tiny.tokenizer.eos_token_ids)
    for text in constrained.values():
        ids = tiny.tokenizer.encode(text, add_special_tokens=False)  # byte tokenizer: one id per byte
        assert ids and set(ids) <= allowed_text_ids, text


def test_grammar_generation_is_always_kept_by_the_filter(tiny):
    prompts = make_number_prompts(8, seed=4)
    out = dict(generate_responses(tiny, TraitSpec("system_prompt", animal="owl"), prompts, batch_size=4,
                                  max_tokens=64, seed=5, temperature=1.5, decoding="grammar"))
    assert sorted(out) == list(range(8))
    for text in out.values():  # 10 numbers x 3 digits + 9 separators x 3 fit in 64 tokens: always finished
        assert rejection_reason(text) is None, repr(text)
    # one row's processor follows its own text: after "12, 3" only digits, "," and end-of-sequence remain
    grammar = FilterFormat(NumbersOnly(tiny.tokenizer))
    mask = np.array(grammar.mask("12, 3", 259))
    expect = {tiny.tokenizer.encode(c, add_special_tokens=False)[0] for c in "0123456789,"}
    assert set(np.flatnonzero(mask).tolist()) == expect | set(tiny.tokenizer.eos_token_ids)
    assert not np.array(grammar.mask("", 259))[sorted(tiny.tokenizer.eos_token_ids)].any()  # no empty response


def _config(**numbers):
    return parse_config({"trait": {"kind": "system_prompt", "animal": "owl"},
                         "numbers": {"prompt_count": 8, "dataset_size": 4, **numbers}}, "test.toml")


def test_decoding_round_trips_and_bad_values_name_the_key():
    for decoding in ("free", "constrained", "grammar"):
        config = _config(decoding=decoding)
        data = config_to_dict(config)
        assert data["numbers"]["decoding"] == decoding
        back = config_from_dict(json.loads(json.dumps(data)))
        assert dataclasses.replace(back, source="") == dataclasses.replace(config, source="")
    assert _config().numbers.decoding == "free"  # the published protocol by default
    with pytest.raises(ConfigError, match=r"test\.toml \[numbers\] decoding: must be one of"):
        _config(decoding="json")


def test_resume_with_another_decoding_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.prepare(_config(decoding="grammar"))
    folder.prepare(_config(decoding="grammar"))  # the same settings resume
    with pytest.raises(RunFolderError, match=r"other settings \(numbers\.decoding: folder 'grammar', now 'free'\)"):
        folder.prepare(_config())
    with pytest.raises(RunFolderError, match=r"numbers\.decoding: folder 'grammar', now 'constrained'"):
        folder.prepare(_config(decoding="constrained"))


def test_folders_from_before_the_setting_resume_as_free(tmp_path):
    folder = RunFolder(tmp_path / "old")
    folder.prepare(_config())
    path = folder.path / "config.json"
    stored = json.loads(path.read_text())
    del stored["settings"]["numbers"]["decoding"]  # as written before the setting existed
    path.write_text(json.dumps(stored))
    folder.prepare(_config())  # free: resumes
    with pytest.raises(RunFolderError, match=r"numbers\.decoding: folder None, now 'constrained'"):
        folder.prepare(_config(decoding="constrained"))
