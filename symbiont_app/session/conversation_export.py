"""Saving a conversation: Markdown to read, JSON with every generated token's statistics.

The JSON keeps, per generated token, its id, text, position, the probability the model
gave it, the probability it had under the sampling settings, the entropy (bits) of the raw
and of the sampled distribution, and its top alternatives: enough to redraw the chat's
colouring or compare two runs without the model. Written atomically (temp file, rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_hooks.errors import SymbiontError

FORMAT_VERSION = 1
"""Bumped when the JSON layout changes incompatibly."""
FINISH_NOTES = {
    "length": "truncated: the reply reached the max-tokens limit",
    "cancelled": "stopped by the user",
    "failed": "failed",
}
"""How a reply that did not end by itself is marked (the chat's markers say the same)."""


class ExportError(SymbiontError):
    """A conversation could not be written (unknown format, nothing to save, an OS error)."""


def finish_note(turn) -> str:
    """The marker text of a reply that did not end by itself ("" when it ended with end-of-text)."""
    note = FINISH_NOTES.get(turn.finish_reason or "", "")
    if turn.finish_reason == "failed" and turn.error:
        note = f"failed: {turn.error}"
    return note


def conversation_dict(conversation, model_info=None, system_prompt: str = "") -> dict[str, Any]:
    """The conversation as plain JSON-able data."""
    turns = []
    for turn in conversation.turns:
        entry: dict[str, Any] = {"role": turn.role, "text": turn.text}
        if turn.role == "assistant":
            entry["finish_reason"] = turn.finish_reason
            if turn.error:
                entry["error"] = turn.error
            entry["tokens_per_second"] = round(turn.tokens_per_second, 3)
            entry["tokens"] = [
                {
                    "position": r.position, "token": r.token, "text": r.text, "prob": r.prob,
                    "sampling_prob": r.sampling_prob, "entropy_bits": r.raw_entropy,
                    "sampled_entropy_bits": r.entropy,
                    "alternatives": [{"token": t, "prob": p, "text": x} for t, p, x in r.top_k[:5]],
                }
                for r in turn.tokens
            ]
        turns.append(entry)
    model = None
    if model_info is not None:
        model = {"name": model_info.name, "spec": model_info.spec, "fingerprint": model_info.fingerprint,
                 "runtime_dtype": model_info.runtime_dtype}
    return {"format": "symbiont-conversation", "version": FORMAT_VERSION, "model": model,
            "system_prompt": system_prompt or None, "turns": turns}


def conversation_markdown(conversation, model_info=None, system_prompt: str = "") -> str:
    lines = ["# Conversation", ""]
    if model_info is not None:
        lines += [f"Model: {model_info.name} (`{model_info.spec}`, fingerprint {model_info.fingerprint})", ""]
    if system_prompt:
        lines += [f"System prompt: {system_prompt}", ""]
    for turn in conversation.turns:
        if turn.role == "user":
            lines += ["## You", "", turn.text, ""]
            continue
        lines += ["## Model", "", turn.text]
        notes = [n for n in (finish_note(turn),) if n]
        if turn.tokens:
            mean_p = sum(r.prob for r in turn.tokens) / len(turn.tokens)
            mean_h = sum(r.raw_entropy for r in turn.tokens) / len(turn.tokens)
            notes.append(f"{len(turn.tokens)} tokens, {turn.tokens_per_second:.1f} tokens/s, "
                         f"mean p {mean_p:.2f}, mean entropy {mean_h:.2f} bits")
        lines += ["", *[f"*[{n}]*" for n in notes], ""]
    return "\n".join(lines).rstrip() + "\n"


def export_conversation(path: str | Path, conversation, model_info=None, system_prompt: str = "") -> Path:
    """Write ``path`` as Markdown (``.md``/``.markdown``) or JSON (``.json``); returns the path."""
    from mlx_hooks.atomic_io import atomic_write_bytes

    path = Path(path)
    suffix = path.suffix.lower()
    if not conversation.turns:
        raise ExportError(f"{path}: nothing to export (the conversation is empty)")
    if suffix in (".md", ".markdown"):
        data = conversation_markdown(conversation, model_info, system_prompt)
    elif suffix == ".json":
        data = json.dumps(conversation_dict(conversation, model_info, system_prompt), indent=1, ensure_ascii=False)
    else:
        raise ExportError(f"{path}: unknown conversation format {suffix or '(no suffix)'!r}: use .md or .json")
    try:
        atomic_write_bytes(path, data.encode("utf-8"))
    except OSError as exc:
        raise ExportError(f"{path}: could not write the conversation ({exc})") from exc
    return path
