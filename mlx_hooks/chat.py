"""Multi-turn chat over hooked generation, with the model's chat template.

Each turn renders the whole conversation with the chat template, keeps the KV cache
for the longest prefix it shares with what the cache already holds (trimming the
rest with mlx-lm's ``trim_prompt_cache``), and feeds only the new tokens. Positions
therefore run on across turns, so one recorder can hold the whole conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import mlx.nn as nn
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from .activation_cache import ActivationRecorder, CacheConfig
from .generate import GenerationStep, hooked_stream_generate


@dataclass
class ChatSession:
    """A conversation with one model. ``send`` streams the assistant's reply."""

    model: nn.Module
    tokenizer: object
    system_prompt: str | None = None
    cache_config: CacheConfig | None = None
    messages: list[dict] = field(default_factory=list)
    recorder: ActivationRecorder = field(init=False)
    tokens: list[int] = field(default_factory=list, init=False)
    """Token ids of the conversation so far (prompt and replies, as the model saw them)."""

    def __post_init__(self):
        self.recorder = ActivationRecorder(self.cache_config)
        self._cache = None
        self._cache_tokens: list[int] = []

    def render(self, add_generation_prompt: bool = True) -> list[int]:
        messages = list(self.messages)
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        if getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True))
        # No template (base models): plain concatenation.
        text = "\n".join(m["content"] for m in messages) + "\n"
        return list(self.tokenizer.encode(text))

    def _reuse_cache(self, prompt: list[int]) -> list[int]:
        """Keep the cached prefix shared with ``prompt``; return the tokens still to feed."""
        if self._cache is None:
            self._cache = make_prompt_cache(self.model)
            self._cache_tokens = []
        shared = 0
        for a, b in zip(self._cache_tokens, prompt):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(prompt) - 1)  # always feed at least one token
        extra = len(self._cache_tokens) - shared
        if extra > 0:
            if can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, extra)
            else:
                self._cache, shared = make_prompt_cache(self.model), 0
        self._cache_tokens = prompt[:shared]
        return prompt[shared:]

    def send(self, user_text: str, **generate_kwargs) -> Iterator[GenerationStep]:
        """Add a user message and stream the reply (kwargs go to ``hooked_stream_generate``)."""
        self.messages.append({"role": "user", "content": user_text})
        prompt = self.render()
        new_tokens = self._reuse_cache(prompt)
        reply: list[int] = []
        text: list[str] = []
        try:
            for step in hooked_stream_generate(
                self.model, self.tokenizer, new_tokens, prompt_cache=self._cache, recorder=self.recorder,
                **generate_kwargs,
            ):
                reply.append(step.token)
                text.append(step.text)
                yield step
        finally:
            # A cancelled reply is kept as far as it got, so the conversation stays coherent.
            self.messages.append({"role": "assistant", "content": "".join(text)})
            self.tokens = prompt + reply
            held = int(getattr(self._cache[0], "offset", 0)) if self._cache else 0
            self._cache_tokens = self.tokens[:held]

    def reset(self) -> None:
        self.messages.clear()
        self.tokens = []
        self._cache = None
        self._cache_tokens = []
        self.recorder.clear()
