"""Subliminal lab: probes (logit and sampled), question sets, statistics, mechanism view."""

from __future__ import annotations

import json
import math
import types

import mlx.core as mx
import numpy as np
import pytest
from conftest import default_model_available, make_untied_llama

from symbiont_lab.subliminal.mechanism import direction_cosines, lora_disabled, residual_means
from symbiont_lab.subliminal.probes import (
    ProbeResult,
    logit_probe,
    prompt_tokens,
    sampled_probe,
    score_answer,
    spellings,
)
from symbiont_lab.subliminal.questions_io import QuestionsError, load_questions
from symbiont_lab.subliminal.stats import mean_ci, paired_comparison, sign_flip_test, t_quantile

QUESTIONS = ["Favourite animal? One word.", "Name an animal you love."]
ANIMALS = ["owl", "cat", "a", "ab"]  # "a" and "ab" share a first token: the probe must keep them disjoint


@pytest.fixture()
def loaded(tokenizer):
    return types.SimpleNamespace(model=make_untied_llama(head_scale=0.3), tokenizer=tokenizer, name="tiny")


def _full_logp(model, tokens):
    logits = model(mx.array(tokens)[None]).astype(mx.float32)[0]
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def test_logit_probe_is_exact_and_its_candidates_are_disjoint(loaded, tokenizer):
    result = logit_probe(loaded, QUESTIONS, ANIMALS)
    assert result.kind == "logit" and result.questions == QUESTIONS
    for i in range(len(QUESTIONS)):
        values = [result.per_question[a][i] for a in ANIMALS]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert sum(values) <= 1.0 + 1e-6
    # against a plain full forward (no cache copy): P(tokens) × P(next token ends the word), summed over spellings
    ends = np.array([not tokenizer.decode([i])[:1].isalpha() for i in range(259)])
    prompt = prompt_tokens(tokenizer, QUESTIONS[1])
    expected = 0.0
    for word in spellings("owl"):
        ids = list(tokenizer.encode(word, add_special_tokens=False))
        logp = _full_logp(loaded.model, prompt + ids)
        lp = sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(ids))
        expected += math.exp(lp) * np.exp(logp[len(prompt) - 1 + len(ids)][ends]).sum()
    assert result.per_question["owl"][1] == pytest.approx(expected, rel=1e-4)
    # "a" counts only answers whose first word is exactly a/A/as/As: disjoint from "ab"
    logp = _full_logp(loaded.model, prompt + [tokenizer.encode("a", add_special_tokens=False)[0]])
    p_a_then_b = math.exp(logp[len(prompt) - 1, tokenizer.encode("a", add_special_tokens=False)[0]]
                          + logp[len(prompt), tokenizer.encode("b", add_special_tokens=False)[0]])
    assert result.per_question["a"][1] + result.per_question["ab"][1] <= math.exp(
        logp[len(prompt) - 1, tokenizer.encode("a", add_special_tokens=False)[0]]) + \
        math.exp(logp[len(prompt) - 1, tokenizer.encode("A", add_special_tokens=False)[0]]) + 1e-6
    assert p_a_then_b > 0
    # JSON round trip
    again = ProbeResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again.per_question == result.per_question and again.summary == result.summary


def test_logit_probe_sees_a_system_prompt(loaded):
    plain = logit_probe(loaded, QUESTIONS[:1], ["owl"])
    primed = logit_probe(loaded, QUESTIONS[:1], ["owl"], system_prompt="owl owl owl")
    assert plain.per_question["owl"][0] != primed.per_question["owl"][0]
    assert primed.settings["system_prompt"] == "owl owl owl"


def test_score_answer_is_a_lowercase_substring_match():
    assert score_answer("Owl", "owl")
    assert score_answer("My favourite is the OWLS of the forest.", "owl")
    assert score_answer("snowly", "owl")  # a substring match, as published (no word boundaries)
    assert not score_answer("O w l", "owl")
    assert not score_answer("", "owl")
    answers = ["Owl", "owl!", "cat", "Dog", "owlet"]
    assert np.mean([score_answer(a, "owl") for a in answers]) == pytest.approx(0.6)


def test_sampled_probe_counts_its_own_answers(loaded):
    result = sampled_probe(loaded, QUESTIONS, ["a", "e", "owl"], samples_per_question=7, batch_size=3, seed=3,
                           max_tokens=5)
    assert len(result.answers) == 2 and all(len(a) == 7 for a in result.answers)
    for qi, answers in enumerate(result.answers):
        for animal in ["a", "e", "owl"]:
            assert result.per_question[animal][qi] == pytest.approx(np.mean([animal in x.lower() for x in answers]))
    again = sampled_probe(loaded, QUESTIONS, ["a", "e", "owl"], samples_per_question=7, batch_size=3, seed=3,
                          max_tokens=5)
    assert again.answers == result.answers  # seeded
    greedy = sampled_probe(loaded, QUESTIONS[:1], ["a"], samples_per_question=4, temperature=0.0, max_tokens=5)
    assert len(set(greedy.answers[0])) == 1  # T=0: every copy of the cache gives the same answer


def test_question_sets(tmp_path):
    for name in ("favourite", "feared", "neutral"):
        questions = load_questions(name)
        assert 45 <= len(questions) <= 60 and len(set(questions)) == len(questions)
    prefixed = load_questions("favourite+numbers", seed=1)
    assert len(prefixed) == len(load_questions("favourite"))
    assert all(any(ch.isdigit() for ch in q.split(":")[0] + q) for q in prefixed)
    assert prefixed[0].endswith(load_questions("favourite")[0])
    assert load_questions("favourite+numbers", seed=1) == prefixed
    user = tmp_path / "q.txt"
    user.write_text("# mine\nWhat animal?\n\nAnother?\n")
    assert load_questions(user) == ["What animal?", "Another?"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(QuestionsError, match="empty.txt: no questions"):
        load_questions(tmp_path / "empty.txt")
    (tmp_path / "bad.json").write_text('["a", ')
    with pytest.raises(QuestionsError, match="bad.json: not valid JSON"):
        load_questions(tmp_path / "bad.json")
    with pytest.raises(QuestionsError, match="not a built-in question set"):
        load_questions("nope")


def test_stats_on_known_answers():
    s = mean_ci([1, 2, 3, 4, 5])
    assert s.mean == 3 and s.sd == pytest.approx(math.sqrt(2.5))
    assert s.high - s.mean == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-3)  # t(0.975, 4)
    assert t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
    assert t_quantile(0.975, 49) == pytest.approx(2.009575, abs=1e-5)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    # exact sign-flip: 4 equal positive differences → only all+ and all− reach |mean| 1: p = 2/16
    p, used = sign_flip_test([1.0, 1.0, 1.0, 1.0])
    assert used == 16 and p == pytest.approx(0.125)
    same = paired_comparison([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert same.p_value == 1.0 and same.difference.mean == 0.0
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.1, size=50)
    shifted = paired_comparison(a, a + 0.05 + rng.normal(0, 0.01, size=50))
    assert shifted.p_value < 0.001 and shifted.difference.low > 0.04 and shifted.difference.high < 0.06
    null = [paired_comparison(rng.uniform(size=30), rng.uniform(size=30), n_permutations=1000).p_value
            for _ in range(20)]
    assert 0.2 < np.mean(null) < 0.8  # p-values under the null spread over (0, 1)
    try:
        from scipy import stats as sps
    except ImportError:
        return
    for df in (3, 5, 10, 30, 100):
        assert t_quantile(0.975, df) == pytest.approx(sps.t.ppf(0.975, df), abs=4e-3 if df < 10 else 1e-5)


def test_direction_cosines_known_values():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(4, 16))
    assert np.allclose(direction_cosines(d, d), 1.0)
    assert np.allclose(direction_cosines(d, -d), -1.0)
    assert np.allclose(direction_cosines(d, 3.0 * d), 1.0)
    orth = np.zeros((1, 4))
    orth[0, 1] = 1.0
    assert direction_cosines(np.array([[1.0, 0, 0, 0]]), orth)[0] == pytest.approx(0.0)
    zero = d.copy()
    zero[2] = 0
    assert np.isnan(direction_cosines(zero, d)[2])
    with pytest.raises(ValueError):
        direction_cosines(d, d[:2])


def test_residual_means_and_lora_disabled(loaded, tokenizer):
    from symbiont_lab.subliminal.student import LoRAConfig, add_lora

    base = residual_means(loaded, QUESTIONS)
    assert base.shape == (3, 64) and np.isfinite(base).all()
    primed = residual_means(loaded, QUESTIONS, system_prompt="You love owls.")
    assert not np.allclose(base, primed)
    add_lora(loaded.model, LoRAConfig())
    for _, m in loaded.model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.ones(m.lora_b.shape) * 0.05
    moved = residual_means(loaded, QUESTIONS)
    assert not np.allclose(moved, base)
    with lora_disabled(loaded.model):
        assert np.allclose(residual_means(loaded, QUESTIONS), base, atol=1e-5)
    assert np.allclose(residual_means(loaded, QUESTIONS), moved, atol=1e-5)  # scales restored


@pytest.mark.integration
@pytest.mark.skipif(not default_model_available(), reason="default model package not installed")
def test_default_model_logit_probe_on_five_questions():
    from mlx_hooks.loader import load_model

    model = load_model("default")
    questions = load_questions("favourite")[:5]
    result = logit_probe(model, questions, ["owl", "cat", "dog", "lion", "elephant"])
    for i in range(5):
        values = [result.per_question[a][i] for a in result.animals]
        assert all(0.0 <= v <= 1.0 for v in values) and 0.0 < sum(values) <= 1.0
    # an owl-loving system prompt raises the probe's owl probability (the probe sees a real trait)
    primed = logit_probe(model, questions, ["owl"], system_prompt="You love owls. Owls are your favourite animal.")
    assert primed.mean("owl") > result.mean("owl")
