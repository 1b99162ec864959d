"""Steering vectors: a direction read from contrasting prompts, added back while the model talks.

Extraction runs each prompt through the model once (prompts of any length; one forward
each, so no padding can leak into a mean) and reads one hook point:

- ``mean_diff``: mean activation over the positive prompts minus the mean over the
  negative ones (the activation-addition / contrastive-activation-addition method);
  prompts may be paired or not.
- ``pca``: the first principal component of the paired differences ``pos_i - neg_i``,
  taken about zero rather than about their mean (centering would remove the shared
  component, which is the concept itself), sign-aligned with the mean difference and
  scaled to the differences' mean projection on it.

``tokens="last"`` reads the last position of each prompt (with the chat template: the
position that is about to answer), ``"mean"`` averages positions. Both the mean and the
stored *typical norm* (mean ``‖x‖`` over the prompts' tokens at that point) leave out
position 0: in most models that attention-sink position carries massive activations
(SmolLM2-135M, resid_post.15: ‖x‖ ≈ 25 000 there against ≈ 175 elsewhere), which would
swamp both.

Applying: :class:`SteeringSet` turns vectors into :class:`~mlx_hooks.interventions.AddVector`
interventions, with a coefficient that is either absolute (``c · v̂``: the added vector
has norm ``c``) or relative (``c · typical_norm · v̂``: ``c`` is a fraction of the usual
residual size, so it means about the same on any model). The coefficient can be changed
at any time, between chat turns or during a generation (see ``AddVector`` for when a
mid-generation change lands): nothing is rebuilt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .errors import SymbiontError
from .generate import encode_prompt
from .hooks import hooked
from .interventions import AddVector, PositionSpec
from .points import ModelAdapter

METHODS = ("mean_diff", "pca")
TOKEN_MODES = ("last", "mean")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Vector names are tensor keys, file names and CLI arguments: keep them plain."""

Prompt = str | Sequence[int]


class SteeringError(SymbiontError):
    """Bad input to extraction or steering (names what is wrong)."""


@dataclass
class SteeringVector:
    """A steering direction at one hook point, with what is needed to scale it."""

    name: str
    """Key of the vector in files and presets (letters, digits, ``_ . -``)."""
    hook_point: str
    """Where it was extracted (and where it is applied unless told otherwise), e.g. ``resid_post.15``."""
    vector: np.ndarray
    """The direction as extracted (not normalised), ``[D]`` float32."""
    method: str = "mean_diff"
    """``mean_diff`` or ``pca``."""
    token_mode: str = "last"
    """``last`` or ``mean``: which positions of each prompt were read."""
    typical_norm: float = 0.0
    """Mean residual norm at ``hook_point`` over the prompts' tokens (position 0 left out); 0 if unknown."""
    source: dict = field(default_factory=dict)
    """Summary of where it came from: prompt counts, paired, contrast set, chat template, probe tokens."""

    def __post_init__(self):
        if not NAME_PATTERN.match(self.name or ""):
            raise SteeringError(f"steering vector name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'")
        self.vector = np.asarray(self.vector, dtype=np.float32).reshape(-1)
        if self.vector.size == 0 or not np.all(np.isfinite(self.vector)):
            raise SteeringError(f"steering vector {self.name!r}: empty or not finite")
        if not np.isfinite(self.typical_norm) or self.typical_norm < 0:
            raise SteeringError(f"steering vector {self.name!r}: typical_norm {self.typical_norm} is not a norm")

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[0])

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector.astype(np.float64)))

    def unit(self) -> np.ndarray:  # [D]
        norm = self.norm
        if norm == 0:
            raise SteeringError(f"steering vector {self.name!r} is zero: it has no direction")
        return (self.vector.astype(np.float64) / norm).astype(np.float32)

    def added_vector(self, coefficient: float, relative: bool) -> np.ndarray:  # [D]
        """What steering adds: ``c · v̂`` (absolute) or ``c · typical_norm · v̂`` (relative)."""
        return (np.float32(coefficient) * np.float32(self.scale_unit(relative))) * self.unit()

    def scale_unit(self, relative: bool) -> float:
        """Length of the added vector per unit of coefficient."""
        if not relative:
            return 1.0
        if self.typical_norm <= 0:
            raise SteeringError(
                f"steering vector {self.name!r} has no typical norm recorded: use an absolute coefficient"
            )
        return float(self.typical_norm)


# -- extraction ----------------------------------------------------------------------------------


def prompt_tokens(tokenizer, prompt: Prompt, chat_template: bool = False, system_prompt: str | None = None) -> list[int]:
    """Token ids of ``prompt``; with ``chat_template``, wrapped as a user message ready for the answer."""
    if not isinstance(prompt, str):
        return [int(t) for t in prompt]
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise SteeringError("chat template requested, but this model's tokenizer has none")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return encode_prompt(tokenizer, prompt)


def prompt_activations(
    model: nn.Module, tokenizer, prompts: Sequence[Prompt], hook_point: str, tokens: str = "last",
    chat_template: bool = False, system_prompt: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt activation ``[N, D]`` (last token or mean) and every token's norm ``[total]`` (position 0 left out)."""
    if tokens not in TOKEN_MODES:
        raise SteeringError(f"token mode {tokens!r}: use one of {', '.join(TOKEN_MODES)}")
    rows, norms = [], []
    with hooked(model, capture=[hook_point]) as hooks:
        for index, prompt in enumerate(prompts):
            ids = prompt_tokens(tokenizer, prompt, chat_template, system_prompt)
            if not ids:
                raise SteeringError(f"prompt {index} ({prompt!r}) has no tokens")
            hooks.recorder.clear()
            model(mx.array([ids]))
            x = hooks.recorder.stack(hooks.capture_points[0])[0].astype(mx.float32)  # [T, D]
            body = x[1:] if x.shape[0] > 1 else x  # [T-1, D]: without the attention-sink position
            row = x[-1] if tokens == "last" else body.mean(axis=0)  # [D]
            token_norms = mx.linalg.norm(body, axis=-1)  # [T-1]
            mx.eval(row, token_norms)
            rows.append(np.array(row))
            norms.append(np.array(token_norms))
    return np.stack(rows), np.concatenate(norms)


def direction_from_activations(positive: np.ndarray, negative: np.ndarray, method: str) -> tuple[np.ndarray, dict]:
    """The steering direction ``[D]`` from activations ``[N+, D]`` and ``[N-, D]``, and method details."""
    if method not in METHODS:
        raise SteeringError(f"method {method!r}: use one of {', '.join(METHODS)}")
    pos, neg = positive.astype(np.float64), negative.astype(np.float64)
    mean_diff = pos.mean(axis=0) - neg.mean(axis=0)  # [D]
    if method == "mean_diff":
        return mean_diff.astype(np.float32), {}
    if pos.shape[0] != neg.shape[0]:
        raise SteeringError(
            f"pca needs paired prompts: got {pos.shape[0]} positive and {neg.shape[0]} negative (use mean_diff)"
        )
    diffs = pos - neg  # [N, D]
    _, singular, vt = np.linalg.svd(diffs, full_matrices=False)
    component = vt[0]  # [D], unit
    if component @ mean_diff < 0:
        component = -component
    scale = float((diffs @ component).mean())
    explained = float(singular[0] ** 2 / max(np.sum(singular**2), 1e-30))
    return (component * scale).astype(np.float32), {"pca_explained": round(explained, 6)}


def extract_steering_vector(
    model: nn.Module, tokenizer, positive: Sequence[Prompt], negative: Sequence[Prompt], *,
    name: str = "steering", hook_point: str | None = None, layer: int | None = None, method: str = "mean_diff",
    tokens: str = "last", chat_template: bool = False, system_prompt: str | None = None,
    source: dict | None = None,
) -> SteeringVector:
    """Extract a steering vector at ``hook_point`` (default ``resid_post.{layer}``, layer default: the middle)."""
    if not positive or not negative:
        raise SteeringError(f"need positive and negative prompts (got {len(positive)} and {len(negative)})")
    adapter = ModelAdapter(model)
    if hook_point is None:
        hook_point = f"resid_post.{adapter.n_layers // 2 if layer is None else layer}"
    point = adapter.parse(hook_point).name
    if method not in METHODS:
        raise SteeringError(f"method {method!r}: use one of {', '.join(METHODS)}")
    pos_acts, pos_norms = prompt_activations(model, tokenizer, positive, point, tokens, chat_template, system_prompt)
    neg_acts, neg_norms = prompt_activations(model, tokenizer, negative, point, tokens, chat_template, system_prompt)
    vector, details = direction_from_activations(pos_acts, neg_acts, method)
    typical = float(np.concatenate([pos_norms, neg_norms]).astype(np.float64).mean())
    summary = {
        "n_positive": len(positive), "n_negative": len(negative), "paired": len(positive) == len(negative),
        "chat_template": bool(chat_template), **details, **(source or {}),
    }
    for side, prompts in (("positive", positive), ("negative", negative)):
        if isinstance(prompts[0], str):
            summary.setdefault(f"example_{side}", prompts[0][:200])
    return SteeringVector(name, point, vector, method, tokens, typical, summary)


# -- applying ------------------------------------------------------------------------------------


@dataclass
class AppliedVector:
    """One vector being applied; change :attr:`coefficient` at any time."""

    vector: SteeringVector
    hook_point: str
    relative: bool
    intervention: AddVector
    """The live intervention: its ``vector`` is ``v̂`` times :meth:`SteeringVector.scale_unit`, its ``scale`` the coefficient."""

    @property
    def coefficient(self) -> float:
        return float(self.intervention.scale)

    @coefficient.setter
    def coefficient(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value):
            raise SteeringError(f"coefficient {value} for {self.vector.name!r} is not finite")
        self.intervention.scale = value

    @property
    def positions(self) -> PositionSpec:
        return self.intervention.positions

    def added_vector(self) -> np.ndarray:  # [D]
        return self.vector.added_vector(self.coefficient, self.relative)


class SteeringSet:
    """Any number of vectors applied at once, as ``{hook_point: [AddVector, ...]}``.

    Pass :meth:`interventions` to ``hooked``/``hooked_stream_generate``/``ChatSession.send``;
    the dict holds the live ``AddVector`` objects, so :meth:`set_coefficient` (or
    ``applied.coefficient = c``) acts on the next forward call without rebuilding anything.
    """

    def __init__(self, model: nn.Module | None = None):
        self.adapter = ModelAdapter(model) if model is not None else None
        self.applied: list[AppliedVector] = []

    def add(
        self, vector: SteeringVector, coefficient: float, *, relative: bool = True, positions: PositionSpec = "all",
        hook_point: str | None = None,
    ) -> AppliedVector:
        point = hook_point or vector.hook_point
        if self.adapter is not None:
            point = self.adapter.parse(point).name
            if vector.d_model != self.adapter.d_model:
                raise SteeringError(
                    f"steering vector {vector.name!r} has width {vector.d_model}, the model's residual has "
                    f"{self.adapter.d_model}"
                )
        basis = mx.array(vector.unit() * np.float32(vector.scale_unit(relative)))  # [D]
        applied = AppliedVector(vector, point, relative, AddVector(basis, 0.0, positions))
        applied.coefficient = coefficient  # validates
        self.applied.append(applied)
        return applied

    def get(self, name: str) -> AppliedVector:
        for applied in self.applied:
            if applied.vector.name == name:
                return applied
        raise SteeringError(f"no steering vector named {name!r} (have: {[a.vector.name for a in self.applied]})")

    def set_coefficient(self, name: str, value: float) -> None:
        self.get(name).coefficient = value

    def interventions(self) -> dict[str, list[AddVector]]:
        out: dict[str, list[AddVector]] = {}
        for applied in self.applied:
            out.setdefault(applied.hook_point, []).append(applied.intervention)
        return out
