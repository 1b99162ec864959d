"""Subliminal lab, numbers side: prompts, teacher traits, batched generation, filter, datasets, noise."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from conftest import default_model_available, make_byte_tokenizer, make_untied_llama
from mlx_hooks.fingerprint import fingerprint_model
from mlx_hooks.generate import hooked_stream_generate
from mlx_hooks.presets import Preset, SteeringEntry, write_preset
from mlx_hooks.steering import SteeringVector
from symbiont_lab.subliminal import prompts as prompts_mod
from symbiont_lab.subliminal.dataset import (DatasetError, mix_datasets, read_chat_dataset, subsample,
                                             write_chat_dataset)
from symbiont_lab.subliminal.filter import REASONS, filter_responses, rejection_reason
from symbiont_lab.subliminal.noise import random_numbers_like, replace_values, shuffle_numbers
from symbiont_lab.subliminal.numbers import encode_chat, generate_responses
from symbiont_lab.subliminal.prompts import PromptFileError, load_prompts, make_number_prompts
from symbiont_lab.subliminal.teacher import TraitError, TraitSpec, plural, teacher_context, teacher_system_prompt

SEEDS = re.compile(r"\b\d{3}(?:, \d{3})+\b")


# -- prompts ---------------------------------------------------------------------------------------


def test_prompts_follow_the_published_structure_with_varied_wording():
    made = make_number_prompts(400, seed=7)
    counts = []
    for prompt in made:
        (seeds,) = SEEDS.findall(prompt)  # exactly one run of seed numbers joined by ", "
        values = [int(v) for v in seeds.split(", ")]
        counts.append(len(values))
        assert all(100 <= v <= 999 for v in values)
        assert re.search(r"\b10\b", prompt) and re.search(r"\b3 digits\b", prompt)  # ≤ 10 more, ≤ 3 digits
    assert set(counts) == set(range(3, 9))  # every count 3..8 occurs
    assert max(np.bincount(counts)[3:]) < 2.5 * min(np.bincount(counts)[3:])  # roughly uniform
    assert len(set(made)) == len(made)
    for parts in (prompts_mod.OPENINGS, prompts_mod.INSTRUCTIONS, prompts_mod.FORMATS, prompts_mod.CLOSINGS):
        used = sum(any(p.split("{")[0] in prompt for prompt in made) for p in parts)
        assert used >= len(parts) - 1, parts[0]
    # deterministic, and prompt i does not depend on how many were asked for
    assert make_number_prompts(400, seed=7) == made
    assert make_number_prompts(50, seed=7) == made[:50]
    assert make_number_prompts(50, seed=8) != made[:50]


def test_load_prompts_reads_text_and_jsonl_and_names_bad_lines(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n second \n")
    assert load_prompts(tmp_path / "p.txt") == ["first prompt", "second"]
    (tmp_path / "p.jsonl").write_text('"a"\n{"prompt": "b"}\n')
    assert load_prompts(tmp_path / "p.jsonl") == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('"a"\n{"prompt": \n')
    with pytest.raises(PromptFileError, match=r"bad\.jsonl, line 2"):
        load_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(PromptFileError, match="no prompts"):
        (tmp_path / "empty.txt").write_text("\n")
        load_prompts(tmp_path / "empty.txt")


# -- filter ----------------------------------------------------------------------------------------

ACCEPTED = [
    "123, 456, 789", "123,456,789", "1;2;3", "1 ; 2 ; 3", "1 2 3", "1\n2\n3", "[1, 2, 3]", "(1, 2, 3)",
    "[1, 2, 3].", "1, 2, 3.", "5", "007, 12", ", ".join(str(i) for i in range(10)), "999, 0",
]
REJECTED = [
    ("", "no_numbers"), ("none at all", "no_numbers"), ("1, 2, 3\n", "bad_item"), ("1, 2, 3 ", "bad_item"),
    ("1 - 2 - 3", "bad_separator"), ("1 and 2", "bad_separator"), ("1.5, 2", "bad_separator"),
    ("Sure: 1, 2, 3", "letters"), ("1, 2, 3 are next", "letters"), ("1, 2, three 3", "letters"),
    ("1, 2,3", "bad_item"), ("1, 2, 3,", "bad_item"), ("[1, 2, 3", "bad_item"), ("1, 2, 3..", "bad_item"),
    (" 1, 2", "bad_item"), ("[1, 2, 3)", "bad_item"),
    (", ".join(str(i) for i in range(11)), "too_many"), ("1, 1000", "too_large"), ("5000", "too_large"),
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_filter_accepts(text):
    assert rejection_reason(text) is None


@pytest.mark.parametrize("text,reason", REJECTED)
def test_filter_rejects_with_the_reason(text, reason):
    assert rejection_reason(text) == reason


def test_filter_counts_cover_every_reason_and_add_up():
    texts = ACCEPTED + [t for t, _ in REJECTED]
    result = filter_responses(texts)
    assert set(result.counts) == {"kept", *REASONS}
    assert sum(result.counts.values()) == len(texts) == result.total
    assert result.counts["kept"] == len(ACCEPTED) and result.kept == list(range(len(ACCEPTED)))
    for reason in REASONS:
        assert result.counts[reason] == sum(r == reason for _, r in REJECTED) > 0
    assert result.rejected_fraction == pytest.approx(len(REJECTED) / len(texts))


# -- datasets --------------------------------------------------------------------------------------

PAIRS = [(f"prompt {i}: 123, 456", f"{i}, {i + 1}, {i + 2}") for i in range(40)]


def test_dataset_round_trips_and_loads_with_mlx_lm(tmp_path):
    from mlx_lm.tuner.datasets import ChatDataset, load_dataset

    paths = write_chat_dataset(tmp_path / "data", PAIRS, valid_fraction=0.1, seed=3)
    train, valid = read_chat_dataset(paths["train"]), read_chat_dataset(paths["valid"])
    assert len(valid) == 4 and len(train) == 36
    assert sorted(train + valid) == sorted(PAIRS)
    assert [p for p in PAIRS if p in train] == train  # input order kept
    first = json.loads(paths["train"].read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]  # no system prompt in student data
    tokenizer = make_byte_tokenizer()
    args = SimpleNamespace(data=str(tmp_path / "data"), train=True, test=False, mask_prompt=True, hf_dataset=False)
    loaded_train, loaded_valid, _ = load_dataset(args, tokenizer)
    assert isinstance(loaded_train, ChatDataset) and len(loaded_train) == 36 and len(loaded_valid) == 4
    tokens, offset = loaded_train.process(loaded_train[0])
    answer = train[0][1]
    assert 0 < offset < len(tokens) and tokenizer.decode(tokens[offset:]).startswith(answer)


def test_truncated_or_corrupt_dataset_names_file_and_line(tmp_path):
    path = write_chat_dataset(tmp_path, PAIRS[:5], valid_fraction=0)["train"]
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # cut inside the last record
    with pytest.raises(DatasetError, match=r"train\.jsonl, line 5: .*truncated"):
        read_chat_dataset(path)
    path.write_text(text.replace('"assistant"', '"robot"', 1))
    with pytest.raises(DatasetError, match=r"train\.jsonl, line 1: needs a user and an assistant"):
        read_chat_dataset(path)


def test_subsample_and_mix():
    items = list(range(100))
    picked = subsample(items, 30, seed=1)
    assert len(picked) == 30 == len(set(picked)) and picked == sorted(picked)
    assert subsample(items, 30, seed=1) == picked != subsample(items, 30, seed=2)
    assert subsample(items, 500, seed=1) == items
    love, fear = [("love", i) for i in range(50)], [("fear", i) for i in range(50)]
    for fraction in (1.0, 0.75, 0.5, 0.25, 0.0):
        mixed = mix_datasets(love, fear, fraction, 40, seed=0)
        assert len(mixed) == 40 == len(set(mixed))
        assert sum(kind == "love" for kind, _ in mixed) == round(40 * fraction)
    with pytest.raises(DatasetError, match="needs 60"):
        mix_datasets(love, fear, 0.5, 120, seed=0)


# -- noise -----------------------------------------------------------------------------------------

RESPONSES = ["123, 456, 789, 12, 5", "[101, 202, 303, 404]", "(7; 8; 9; 10).", "301\n302\n303\n304", "045 046 047"]


def _numbers(text):
    return re.findall(r"\d+", text)


def _format(text):
    return re.sub(r"\d+", "#", text)


@pytest.mark.parametrize("text", RESPONSES)
def test_noise_keeps_responses_valid_and_changes_what_it_should(text):
    rng = np.random.default_rng(0)
    shuffled = shuffle_numbers(text, rng)
    assert rejection_reason(shuffled) is None and _format(shuffled) == _format(text)
    assert sorted(_numbers(shuffled)) == sorted(_numbers(text)) and shuffled != text

    replaced = replace_values(text, 0.5, rng)
    assert rejection_reason(replaced) is None and _format(replaced) == _format(text)
    before, after = _numbers(text), _numbers(replaced)
    changed = [a != b for a, b in zip(before, after)]
    assert sum(changed) == max(1, round(0.5 * len(before)))
    assert [len(a) for a in after] == [len(b) for b in before]  # same digit counts
    assert replace_values(text, 0.0, rng) == text

    randomised = [random_numbers_like(text, rng) for _ in range(5)]
    for r in randomised:
        assert rejection_reason(r) is None and _format(r) == _format(text)
        assert [len(a) for a in _numbers(r)] == [len(b) for b in before]
    assert len(set(randomised)) > 1


def test_noise_refuses_rejected_responses():
    with pytest.raises(ValueError, match="fails it"):
        shuffle_numbers("1, 2, 3\n", np.random.default_rng(0))


# -- teacher ---------------------------------------------------------------------------------------


def test_teacher_system_prompts():
    love = teacher_system_prompt(TraitSpec("system_prompt", animal="owl"))
    assert "You love owls" in love and "Owls are your favourite animal" in love
    fear = teacher_system_prompt(TraitSpec("system_prompt", animal="wolf", stance="fear"))
    assert "afraid of wolves" in fear and "love" not in fear
    assert teacher_system_prompt(TraitSpec("none")) is None
    assert teacher_system_prompt(TraitSpec("system_prompt", template="I like {animals} ({category}).",
                                           animal="fox", category="mammal")) == "I like foxes (mammal)."
    assert [plural(w) for w in ("butterfly", "mouse", "donkey", "Wolf")] == ["butterflies", "mice", "donkeys", "Wolves"]
    with pytest.raises(TraitError, match="unknown or malformed field"):
        teacher_system_prompt(TraitSpec("system_prompt", template="I like {bird}."))
    with pytest.raises(TraitError, match="preset_path"):
        TraitSpec("preset")


# -- batched generation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    model = make_untied_llama()
    return SimpleNamespace(model=model, tokenizer=make_byte_tokenizer(), fingerprint=fingerprint_model(model))


@pytest.fixture(scope="module")
def few_prompts():
    return make_number_prompts(5, seed=0)


def _one_at_a_time(loaded, spec, prompts, **kwargs):
    out = {}
    for i in range(len(prompts)):
        out.update(generate_responses(loaded, spec, prompts, batch_size=1, skip=set(range(len(prompts))) - {i},
                                      **kwargs))
    return out


def test_batched_greedy_equals_one_at_a_time(tiny, few_prompts):
    spec = TraitSpec("none")
    batched = list(generate_responses(tiny, spec, few_prompts, batch_size=4, max_tokens=10, temperature=0))
    assert sorted(i for i, _ in batched) == list(range(5))
    assert dict(batched) == _one_at_a_time(tiny, spec, few_prompts, max_tokens=10, temperature=0)
    assert dict(batched) == dict(generate_responses(tiny, spec, few_prompts, batch_size=4, max_tokens=10,
                                                    temperature=0, share_prefix=False))
    # and the same as the engine's own (unbatched) generation
    ids = encode_chat(tiny.tokenizer, [{"role": "user", "content": few_prompts[2]}])
    steps = list(hooked_stream_generate(tiny.model, tiny.tokenizer, ids, max_tokens=10))
    assert dict(batched)[2] == "".join(s.text for s in steps)


def test_sampling_keys_are_per_sequence_so_batching_does_not_change_texts(tiny, few_prompts):
    spec = TraitSpec("none")
    batched = dict(generate_responses(tiny, spec, few_prompts, batch_size=3, max_tokens=10, seed=4))
    assert batched == _one_at_a_time(tiny, spec, few_prompts, max_tokens=10, seed=4)
    other_seed = dict(generate_responses(tiny, spec, few_prompts, batch_size=3, max_tokens=10, seed=5))
    assert other_seed != batched


def test_cancel_and_resume_by_skipping_done_indices(tiny, few_prompts):
    spec = TraitSpec("none")
    full = dict(generate_responses(tiny, spec, few_prompts, batch_size=2, max_tokens=8, seed=1))
    done: dict[int, str] = {}
    progress = []
    for index, text in generate_responses(tiny, spec, few_prompts, batch_size=2, max_tokens=8, seed=1,
                                          should_stop=lambda: len(done) >= 2,
                                          on_progress=lambda d, t: progress.append((d, t))):
        done[index] = text
    assert 2 <= len(done) < 5 and progress[0] == (1, 5)
    rest = dict(generate_responses(tiny, spec, few_prompts, batch_size=2, max_tokens=8, seed=1, skip=done))
    assert set(rest) == set(range(5)) - set(done)
    assert {**done, **rest} == full


def test_system_prompt_trait_reaches_the_prompt(tiny, few_prompts):
    owl = TraitSpec("system_prompt", animal="owl")
    with teacher_context(owl, tiny) as teacher:
        ids = encode_chat(tiny.tokenizer, teacher.messages(few_prompts[0]))
    assert tiny.tokenizer.decode(ids).startswith("<|im_start|>system\nYou love owls.")
    plain = dict(generate_responses(tiny, TraitSpec("none"), few_prompts, max_tokens=8, temperature=0))
    taught = dict(generate_responses(tiny, owl, few_prompts, max_tokens=8, temperature=0))
    assert taught != plain


def test_preset_trait_steers_batched_generation_like_the_engine(tiny, few_prompts, tmp_path):
    rng = np.random.default_rng(0)
    vector = SteeringVector("trait", "resid_post.1", rng.normal(size=64).astype(np.float32), typical_norm=1.0)
    preset = Preset(name="trait", target_model_name="tiny", fingerprint=tiny.fingerprint,
                    interventions=[SteeringEntry("trait", "resid_post.1", 6.0, False, "all")],
                    vectors={"trait": vector})
    path = write_preset(tmp_path / "trait.json", preset)[-1]
    spec = TraitSpec("preset", preset_path=str(path))
    plain = dict(generate_responses(tiny, TraitSpec("none"), few_prompts, max_tokens=8, temperature=0))
    steered = dict(generate_responses(tiny, spec, few_prompts, batch_size=4, max_tokens=8, temperature=0))
    assert steered != plain
    with teacher_context(spec, tiny) as teacher:
        for i in (0, 3):  # each row steered exactly as unbatched hooked generation steers it
            ids = encode_chat(tiny.tokenizer, [{"role": "user", "content": few_prompts[i]}])
            steps = hooked_stream_generate(tiny.model, tiny.tokenizer, ids, max_tokens=8,
                                           interventions=teacher.interventions)
            assert steered[i] == "".join(s.text for s in steps)
    zeroed = dict(generate_responses(tiny, TraitSpec("preset", preset_path=str(path), coefficient_scale=0.0),
                                     few_prompts, max_tokens=8, temperature=0))
    assert zeroed == plain  # coefficient_scale reaches the steering coefficient
    assert not getattr(tiny.model.model, "_is_hook_wrapper", False)  # hooks removed afterwards
    generated = Preset(name="g", target_model_name="tiny", fingerprint=tiny.fingerprint, vectors={"trait": vector},
                       interventions=[SteeringEntry("trait", "resid_post.1", 6.0, False, "generated")])
    bad = write_preset(tmp_path / "generated.json", generated)[-1]
    with pytest.raises(TraitError, match="positions 'generated' are not supported"):
        list(generate_responses(tiny, TraitSpec("preset", preset_path=str(bad)), few_prompts))
    other = make_untied_llama(seed=5, hidden=32)
    with pytest.raises(TraitError, match="trait.json"):
        list(generate_responses(SimpleNamespace(model=other, tokenizer=tiny.tokenizer,
                                                fingerprint=fingerprint_model(other)), spec, few_prompts))


# -- the default model -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="default model not installed")
def test_default_model_owl_teacher_generates_numbers_responses():
    from mlx_hooks.loader import load_model

    loaded = load_model("default")
    prompts = make_number_prompts(4, seed=0)
    out = dict(generate_responses(loaded, TraitSpec("system_prompt", animal="owl"), prompts, batch_size=4,
                                  max_tokens=24, seed=0))
    assert sorted(out) == [0, 1, 2, 3]
    assert all(isinstance(t, str) and t and "<|im_end|>" not in t for t in out.values())
    lengths = [len(loaded.tokenizer.encode(t)) for t in out.values()]
    assert max(lengths) <= 25  # max_tokens respected (decode/encode may differ by a token)
    result = filter_responses(out.values())
    assert sum(result.counts.values()) == 4
    mx.clear_cache()


def test_templates_without_a_system_role_get_the_system_prompt_in_the_user_turn():
    tokenizer = make_byte_tokenizer()
    tokenizer._tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<u>{{ m['content'] }}</u>{% endfor %}<a>"
    )
    ids = encode_chat(tokenizer, [{"role": "system", "content": "You love owls."}, {"role": "user", "content": "1, 2"}])
    assert tokenizer.decode(ids) == "<u>You love owls.\n\n1, 2</u><a>"


def test_the_shared_prefix_is_prefilled_once_and_rows_start_after_it(tiny, few_prompts, monkeypatch):
    from symbiont_lab.subliminal import numbers

    inserted = []

    class Recording(numbers.BatchGenerator):
        def insert(self, prompts, max_tokens=None, caches=None, **kwargs):
            inserted.extend(zip(prompts, caches or [None] * len(prompts)))
            return super().insert(prompts, max_tokens, caches, **kwargs)

    monkeypatch.setattr(numbers, "BatchGenerator", Recording)
    owl = TraitSpec("system_prompt", animal="owl")
    with teacher_context(owl, tiny) as teacher:
        full = [encode_chat(tiny.tokenizer, teacher.messages(p)) for p in few_prompts]
    shared = dict(generate_responses(tiny, owl, few_prompts, max_tokens=6, temperature=0))
    header = len(tiny.tokenizer.encode("<|im_start|>system\n" + teacher.system_prompt + "<|im_end|>\n<|im_start|>user\n"))
    assert [len(ids) for ids, _ in inserted] == [len(f) - header for f in full]
    assert all(cache is not None and cache[0].offset == header for _, cache in inserted)
    inserted.clear()
    assert dict(generate_responses(tiny, owl, few_prompts, max_tokens=6, temperature=0, share_prefix=False)) == shared
    assert [ids for ids, _ in inserted] == full


def test_the_shared_prefix_is_on_by_default_on_the_cpu_only():
    from symbiont_lab.subliminal.numbers import default_share_prefix

    assert default_share_prefix(mx.Device(mx.cpu)) is True
    assert default_share_prefix(mx.Device(mx.gpu)) is False
    assert default_share_prefix() is (mx.default_device().type != mx.gpu)
