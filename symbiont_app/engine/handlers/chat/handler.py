"""Chat turns: stream a reply token by token; reset the conversation.

Every reply uses ``state.generation_kwargs()`` (the intervention table, the SAE meter), and
re-reads the interventions whenever ``state.revision`` moves while it streams, so a
live change (a slider, a clamp toggle) acts on the next token.
"""

from __future__ import annotations

from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import ChatReset, ChatRewound, ReplyStarted, ResetChat, RewindChat, SendMessage, TokenStep

TOP_ALTERNATIVES = 20
"""Alternatives (with their text) per token: the temperature panel's bars. Tempering and
top-p / min-p never reorder tokens, so the raw top 20 are the top 20 at any setting."""


def _sync_interventions(hook_session, state: EngineState) -> None:
    hook_session.clear_interventions()
    for point, items in state.generation_kwargs().get("interventions", {}).items():
        for item in items:
            hook_session.add(point, item)


@handles(SendMessage)
def send(state: EngineState, request: SendMessage, ctx: HandlerContext) -> None:
    from mlx_hooks.errors import SymbiontError

    if state.chat is None:
        raise SymbiontError("no model loaded: load one from the model picker first")
    chat = state.chat
    chat.system_prompt = request.system_prompt or None
    sessions: list = []
    revision = state.revision
    kwargs = state.generation_kwargs()
    if ctx.is_cancelled():
        return  # stopped before it began: the chat never hears of this turn
    stream = chat.send(
        request.text, max_tokens=request.max_tokens, sampling=request.sampling, session_out=sessions,
        keep_logprobs=True, step_activations=False, top_k=TOP_ALTERNATIVES, should_stop=ctx.is_cancelled, **kwargs,
    )
    started = False
    try:
        for step in stream:
            if not started:
                # Sent even if a cancel just arrived: the turn is in the chat now, and the window must show it.
                ctx.emit_change(ReplyStarted(request_id=request.request_id, prompt_tokens=step.position,
                                             user_text=request.text))
                started = True
            logprobs, step = step.logprobs, _without_logprobs(step)
            ctx.emit(TokenStep(request_id=request.request_id, step=step, logprobs=logprobs))
            if step.finish_reason:
                ctx.reason = step.finish_reason
            if state.revision != revision and sessions:
                revision = state.revision
                _sync_interventions(sessions[0], state)
    finally:
        stream.close()
        if not started:
            _forget_unstarted_turn(chat, request.text)


def _forget_unstarted_turn(chat, text: str) -> None:
    """A reply that produced no token (stopped at once, or failed) leaves the chat as it was:
    the window hands the text back to the entry, so the engine must not keep the turn."""
    messages = chat.messages
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    if messages and messages[-1] == {"role": "user", "content": text}:
        messages.pop()


def _without_logprobs(step):
    # The vector travels once, in TokenStep.logprobs (float32); the step record stays small.
    from dataclasses import replace

    return replace(step, logprobs=None)


@handles(ResetChat)
def reset(state: EngineState, request: ResetChat, ctx: HandlerContext) -> None:
    if state.chat is not None:
        state.chat.reset()
    ctx.emit(ChatReset(request_id=request.request_id))


@handles(RewindChat)
def rewind(state: EngineState, request: RewindChat, ctx: HandlerContext) -> None:
    """Drop the last exchanges from the chat's messages; the next ``send`` re-renders the rest
    and ``ChatSession`` keeps the KV cache for the prefix they share."""
    from mlx_hooks.errors import SymbiontError

    if state.chat is None:
        raise SymbiontError("no model loaded: nothing to rewind")
    messages = state.chat.messages
    dropped = 0
    while dropped < request.exchanges and messages:
        # an exchange is a user message and the reply after it (a failed reply may be missing)
        while messages and messages[-1]["role"] != "user":
            messages.pop()
        if messages:
            messages.pop()
            dropped += 1
    ctx.emit(ChatRewound(request_id=request.request_id, exchanges=dropped))
