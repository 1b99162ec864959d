"""Logit lens over the conversation, and activation patching between two prompts.

The chat keeps only the SAE meter's hook point in ``ChatSession.recorder`` (capturing
every layer at every token would cost ``n_layers × d_model`` floats per token for a
view that is opened now and then), so the lens re-runs the conversation's tokens
once with every layer's residual captured — with the active interventions, so it
shows what the steered model computed — and lenses only the last columns.
"""

from __future__ import annotations

from mlx_hooks.errors import SymbiontError

from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import LensComputed, PatchingComputed, RunLens, RunPatching


def _model(state: EngineState):
    if state.loaded is None:
        raise SymbiontError("no model loaded: load one from the model picker first")
    return state.loaded


def conversation_lens(state: EngineState, max_positions: int = 32, k: int = 5, kind: str = "resid_post"):
    """(LensResult, tokens, absolute positions) for the last ``max_positions`` tokens of the chat."""
    import mlx.core as mx
    import numpy as np

    from mlx_hooks.hooks import hooked
    from mlx_hooks.lens import logit_lens
    from mlx_hooks.points import ModelAdapter

    loaded = _model(state)
    tokens = list(state.chat.tokens) if state.chat is not None else []
    if len(tokens) < 2:
        raise SymbiontError("the conversation is empty: send a message first, then run the lens")
    adapter = ModelAdapter(loaded.model)
    points = [adapter.parse(f"{kind}.{i}").name for i in range(adapter.n_layers)]
    with hooked(loaded.model, capture=points, interventions=state.interventions() or None) as session:
        mx.eval(loaded.model(mx.array([tokens])))
    n = min(max(1, int(max_positions)), len(tokens))
    residuals = {p: session.recorder.stack(p)[0][-n:] for p in points}  # [n, D] each
    # Column t's target is the token that followed it; the last column tracks its own top-1.
    targets = tokens[len(tokens) - n + 1:] + [tokens[-1]]
    result = logit_lens(loaded.model, residuals, k=k, target_tokens=targets, points=points)
    positions = np.arange(len(tokens) - n, len(tokens))
    return result, tokens[-n:], positions


@handles(RunLens)
def lens(state: EngineState, request: RunLens, ctx: HandlerContext) -> None:
    tok = _model(state).tokenizer
    ctx.progress(0, 1, "re-running the conversation with every layer captured")
    result, tokens, positions = conversation_lens(state, request.max_positions, request.k, request.kind)
    decode = {}

    def text(t: int) -> str:
        if t not in decode:
            decode[t] = tok.decode([int(t)])
        return decode[t]

    top_texts = tuple(tuple(tuple(text(int(t)) for t in cell) for cell in row) for row in result.top_tokens)
    n_total = len(state.chat.tokens)
    interventions = sum(len(v) for v in state.interventions().values())
    ctx.emit(LensComputed(
        request_id=request.request_id, points=result.points, positions=positions, tokens=tuple(text(t) for t in tokens),
        top_texts=top_texts, top_probs=result.top_probs, target_probs=result.target_probs,
        source=(f"re-run of the conversation's {n_total} tokens (last {len(tokens)} shown)"
                + (f" with {interventions} active intervention(s)" if interventions else "")),
    ))


def _answer_token(tokenizer, text: str, which: str) -> tuple[int, str | None]:
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if not ids:
        raise SymbiontError(f"the {which} answer is empty: give the token the prompt should be completed with")
    note = None
    if len(ids) > 1:
        note = (f"the {which} answer {text!r} is {len(ids)} tokens; using its first, "
                f"{tokenizer.decode(ids[:1])!r}")
    return int(ids[0]), note


@handles(RunPatching)
def patching(state: EngineState, request: RunPatching, ctx: HandlerContext) -> None:
    from mlx_hooks.generate import encode_prompt
    from mlx_hooks.patching import activation_patching

    loaded = _model(state)
    tok = loaded.tokenizer
    if not request.clean.strip() or not request.corrupted.strip():
        raise SymbiontError("give both a clean and a corrupted prompt")
    clean, corrupted = encode_prompt(tok, request.clean), encode_prompt(tok, request.corrupted)
    a, note_a = _answer_token(tok, request.clean_answer, "clean")
    b, note_b = _answer_token(tok, request.corrupted_answer, "corrupted")
    if a == b:
        raise SymbiontError("the two answers are the same token: the logit difference would be 0 everywhere")
    ctx.progress(0, 1, f"patching {request.kind} at every layer and position")
    try:
        result = activation_patching(loaded.model, clean, corrupted, (a, b), kind=request.kind)
    except ValueError as exc:  # unequal lengths, or prompts that do not differ on the answers
        raise SymbiontError(str(exc)) from exc
    ctx.emit(PatchingComputed(
        request_id=request.request_id, layers=result.layers, scores=result.scores,
        tokens=tuple(tok.decode([t]) for t in corrupted), clean_tokens=tuple(tok.decode([t]) for t in clean),
        clean_logit_diff=result.clean_logit_diff, corrupted_logit_diff=result.corrupted_logit_diff,
        answers=(tok.decode([a]), tok.decode([b])), kind=result.kind, notes=tuple(n for n in (note_a, note_b) if n),
    ))
