"""ChatSession: KV-cache reuse across turns, one recorder for the conversation, cancelling."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import make_untied_llama

from mlx_hooks import ChatSession, FunctionIntervention, hooked, hooked_stream_generate

MAX = 8
CAPTURE = ["resid_post.0", "resid_post.2"]




@pytest.fixture()
def model():
    return make_untied_llama()


def _common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _fed_positions():
    """An intervention that logs the absolute positions of every forward call."""
    calls: list[list[int]] = []
    log = FunctionIntervention(lambda x, ctx: (calls.append(np.array(ctx.positions)[0].tolist()), x)[1])
    return calls, log


def _render(tokenizer, messages, system=None):
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def test_two_turns_reuse_the_cache_and_match_single_shot(model, tokenizer):
    chat = ChatSession(model, tokenizer, system_prompt="Be brief.")
    first = list(chat.send("Hello there", max_tokens=MAX, capture=CAPTURE))
    assert len(first) == MAX
    prompt1 = _render(tokenizer, [{"role": "user", "content": "Hello there"}], "Be brief.")
    assert chat.tokens == prompt1 + [s.token for s in first]
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    assert chat.messages[1]["content"] == "".join(s.text for s in first)

    expected_prompt2 = _render(tokenizer, [*chat.messages, {"role": "user", "content": "And then?"}], "Be brief.")
    shared = min(_common_prefix(chat.tokens, expected_prompt2), len(expected_prompt2) - 1)
    assert shared >= len(prompt1)  # at least the whole first prompt is reused
    calls, log = _fed_positions()
    second = list(chat.send("And then?", max_tokens=MAX, capture=CAPTURE, interventions={"resid_pre.0": log}))
    assert len(second) == MAX
    # the first forward of turn 2 starts where the reusable prefix ends: nothing before it is fed again
    assert calls[0][0] == shared
    fed = [p for call in calls for p in call]
    assert fed == list(range(shared, len(expected_prompt2) + MAX))
    assert second[0].position == len(expected_prompt2)

    # the reply equals a fresh single-shot greedy generation over the rendered conversation
    single = [s.token for s in hooked_stream_generate(model, tokenizer, expected_prompt2, max_tokens=MAX)]
    assert [s.token for s in second] == single
    assert chat.tokens == expected_prompt2 + single
    assert len(set(single)) >= 3


def test_second_turn_feeds_only_the_new_tokens_when_the_reply_re_renders_identically(tokenizer):
    """With a reply that re-encodes to the same tokens (ASCII letters), the whole first
    turn stays in the KV cache: the second turn feeds only the template's new tokens."""
    model = make_untied_llama(seed=2)
    letters = [i for i in range(256) if tokenizer.decode([i]).isascii() and tokenizer.decode([i]).isalpha()]
    w = np.zeros(model.lm_head.weight.shape, np.float32)
    w[letters] = np.array(model.lm_head.weight)[letters] * 3.0  # every other token: logit 0
    model.lm_head.weight = mx.array(w)
    chat = ChatSession(model, tokenizer)
    first = list(chat.send("Hello", max_tokens=MAX))
    assert all(s.token in letters for s in first)
    tokens1 = list(chat.tokens)
    prompt2 = _render(tokenizer, [*chat.messages, {"role": "user", "content": "Again"}])
    assert prompt2[: len(tokens1)] == tokens1
    calls, log = _fed_positions()
    second = list(chat.send("Again", max_tokens=MAX, interventions={"resid_pre.0": log}))
    assert calls[0][0] == len(tokens1)
    assert sum(len(c) for c in calls) == len(prompt2) - len(tokens1) + MAX
    single = [s.token for s in hooked_stream_generate(model, tokenizer, prompt2, max_tokens=MAX)]
    assert [s.token for s in second] == single


def test_recorder_holds_both_turns(model, tokenizer):
    chat = ChatSession(model, tokenizer)
    list(chat.send("Hi", max_tokens=MAX, capture=CAPTURE))
    end_first = chat.recorder.end
    assert end_first == len(chat.tokens)
    list(chat.send("More", max_tokens=MAX, capture=CAPTURE))
    for point in CAPTURE:
        assert chat.recorder.positions(point).tolist() == list(range(len(chat.tokens)))
    assert chat.recorder.end > end_first
    # the whole conversation's history equals one forward over it
    with hooked(model, capture=CAPTURE) as hooks:
        mx.eval(model(mx.array([chat.tokens])))
    for point in CAPTURE:
        np.testing.assert_allclose(np.array(chat.recorder.stack(point)), np.array(hooks.recorder.stack(point)),
                                   rtol=1e-4, atol=1e-4)


def test_cancelled_reply_keeps_a_partial_message(model, tokenizer):
    chat = ChatSession(model, tokenizer)
    before = [id(model.model), *(id(layer) for layer in model.model.layers)]
    got = []
    for step in chat.send("Tell me a story", max_tokens=50, capture=CAPTURE):
        got.append(step)
        if len(got) == 3:
            break
    assert [id(model.model), *(id(layer) for layer in model.model.layers)] == before  # hooks removed
    assert chat.messages[-1] == {"role": "assistant", "content": "".join(s.text for s in got)}
    prompt = _render(tokenizer, [{"role": "user", "content": "Tell me a story"}])
    assert chat.tokens == prompt + [s.token for s in got]
    assert chat._cache[0].offset == len(chat.tokens)

    # the conversation goes on coherently from the partial reply, reusing the cache
    calls, log = _fed_positions()
    nxt = list(chat.send("Go on", max_tokens=4, interventions={"resid_pre.0": log}))
    prompt2 = _render(tokenizer, chat.messages[:-1])
    assert calls[0][0] >= len(prompt)
    single = [s.token for s in hooked_stream_generate(model, tokenizer, prompt2, max_tokens=4)]
    assert [s.token for s in nxt] == single


def test_system_prompt_and_reset(model, tokenizer):
    chat = ChatSession(model, tokenizer, system_prompt="S")
    list(chat.send("Q", max_tokens=3, capture=["resid_post.0"]))
    rendered = chat.render(add_generation_prompt=False)
    assert tokenizer.decode(rendered).startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>")
    chat.reset()
    assert chat.messages == [] and chat.tokens == [] and chat.recorder.points == []
    calls, log = _fed_positions()
    list(chat.send("Q", max_tokens=2, interventions={"resid_pre.0": log}))
    assert calls[0][0] == 0  # a fresh cache after reset
