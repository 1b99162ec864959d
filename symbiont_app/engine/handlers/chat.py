"""Chat turns: stream a reply token by token; reset the conversation.

Every reply uses ``state.generation_kwargs()`` (steering, clamps, the SAE meter), and
re-reads the interventions whenever ``state.revision`` moves while it streams, so a
live change (a slider, a clamp toggle) acts on the next token.
"""

from __future__ import annotations

from ..protocol import ChatReset, ReplyStarted, ResetChat, SendMessage, TokenStep
from ..registry import HandlerContext, handles
from ..state import EngineState

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
    stream = chat.send(
        request.text, max_tokens=request.max_tokens, sampling=request.sampling, session_out=sessions,
        keep_logprobs=True, step_activations=False, top_k=TOP_ALTERNATIVES, should_stop=ctx.is_cancelled, **kwargs,
    )
    started = False
    try:
        for step in stream:
            if not started:
                ctx.emit(ReplyStarted(request.request_id, step.position, request.text))
                started = True
            logprobs, step = step.logprobs, _without_logprobs(step)
            ctx.emit(TokenStep(request.request_id, step, logprobs))
            if step.finish_reason:
                ctx.reason = step.finish_reason
            if state.revision != revision and sessions:
                revision = state.revision
                _sync_interventions(sessions[0], state)
    finally:
        stream.close()


def _without_logprobs(step):
    # The vector travels once, in TokenStep.logprobs (float32); the step record stays small.
    from dataclasses import replace

    return replace(step, logprobs=None)


@handles(ResetChat)
def reset(state: EngineState, request: ResetChat, ctx: HandlerContext) -> None:
    if state.chat is not None:
        state.chat.reset()
    ctx.emit(ChatReset(request.request_id))
