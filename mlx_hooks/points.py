"""Hook point names (TransformerLens style) and where they live in an mlx-lm model.

Points, in forward order within block i:
  ``embed``            token embedding, before any scaling (Gemma's sqrt(d))   # [B, L, D]
  ``resid_pre.{i}``    what block i receives; ``resid_pre.0 = embed · embed_scale``  # [B, L, D]
  ``attn_z.{i}``       per-head attention output, before the output projection    # [B, L, H·Dh]
  ``attn_out.{i}``     exactly what attention adds to the residual stream         # [B, L, D]
  ``mlp_hidden.{i}``   the MLP's hidden activation, input of its down projection  # [B, L, d_mlp]
  ``mlp_out.{i}``      exactly what the MLP adds to the residual stream           # [B, L, D]
  ``resid_post.{i}``   block i's output: ``resid_pre.i + attn_out.i + mlp_out.i``  # [B, L, D]

These are TransformerLens' ``hook_embed`` (but unscaled: TransformerLens folds Gemma's
scale into ``W_E``), ``hook_resid_pre``, ``attn.hook_z`` (flattened over heads),
``hook_attn_out``, ``mlp.hook_post``, ``hook_mlp_out`` and ``hook_resid_post``. Where a
family normalises a sub-layer's output before adding it (Gemma 2/3's post-attention and
post-feedforward norms), ``attn_out``/``mlp_out`` are taken after that norm: see
:mod:`.architectures`. ``mlp_hidden`` does not exist on mixture-of-experts layers.
Negative layer indices count from the end (``resid_post.-1`` is the last block).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .architectures import Architecture, ModelDims, architecture_of, dims_of
from .errors import HookPointError

BLOCK_KINDS = ("resid_pre", "attn_z", "attn_out", "mlp_hidden", "mlp_out", "resid_post")
"""Per-block point kinds, in forward order."""
SUB_MODULE_KINDS = ("attn_z", "attn_out", "mlp_hidden", "mlp_out")
"""Kinds read at a child module of the block (the others wrap the block itself)."""


@dataclass(frozen=True, order=True)
class HookPoint:
    """A parsed, validated hook point."""

    layer: int
    """Block index (0-based, already normalised from negative); -1 for ``embed``."""
    kind: str
    """``embed`` or one of :data:`BLOCK_KINDS`."""

    @property
    def name(self) -> str:
        return "embed" if self.kind == "embed" else f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Site:
    """Where a sub-module point is read: ``container[attr]``'s output, or its input."""

    container: Any
    attr: str
    reads_input: bool


class ModelAdapter:
    """Finds the parts of an mlx-lm causal LM that hooks and the lens need, through the
    model's :class:`~mlx_hooks.architectures.Architecture` entry."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.arch: Architecture = architecture_of(model)
        parent = model
        for attr in self.arch.decoder_path[:-1]:
            parent = _unwrap(parent[attr]) if isinstance(parent, dict) and attr in parent else None
            if parent is None:
                break
        self.decoder_parent = parent
        """The module holding the decoder (and ``lm_head``): the model, or a wrapper's text model."""
        self.backbone_attr = self.arch.decoder_path[-1]
        if not isinstance(parent, dict) or not isinstance(parent.get(self.backbone_attr), nn.Module):
            raise HookPointError(
                f"{type(model).__module__}.{type(model).__name__}: no decoder at "
                f"`{'.'.join(self.arch.decoder_path)}` (expected for {self.arch.name})"
            )
        for attr in ("layers", "embed_tokens", "norm"):
            if attr not in self.backbone:
                raise HookPointError(
                    f"{type(model).__module__}.{type(model).__name__}: its decoder has no `{attr}`; "
                    f"not a {self.arch.name} model as mlx-lm builds it"
                )

    @property
    def backbone(self) -> nn.Module:
        return _unwrap(self.decoder_parent[self.backbone_attr])

    @property
    def layers(self) -> list:
        return self.backbone["layers"]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def dims(self) -> ModelDims:
        return dims_of(self.model)

    @property
    def d_model(self) -> int:
        return self.dims.d_model

    def width(self, point: "str | HookPoint") -> int:
        """Last-axis width of a point's activation."""
        kind = self.parse(point).kind
        if kind == "attn_z":
            return self.dims.n_heads * self.dims.head_dim
        if kind == "mlp_hidden":
            return self.dims.d_mlp
        return self.dims.d_model

    def site(self, layer: int, kind: str) -> Site | None:
        """Where block ``layer``'s ``kind`` point is read, or None if the block has none."""
        block = _unwrap(self.layers[layer])
        arch = self.arch
        if kind == "attn_out":
            return _child_site(block, arch.attn_out_attr, reads_input=False)
        if kind == "mlp_out":
            return _child_site(block, arch.mlp_out_attr, reads_input=False)
        parent_attr, attr = (arch.attn_attr, arch.out_proj_attr) if kind == "attn_z" else (arch.mlp_attr, arch.down_proj_attr)
        parent = _unwrap(block.get(parent_attr)) if isinstance(block, dict) else None
        return _child_site(parent, attr, reads_input=True) if isinstance(parent, nn.Module) else None

    def final_norm(self, x):  # x: [..., D] -> [..., D]
        return _unwrap(self.backbone["norm"])(x)

    def unembed(self, x):  # x: [..., D] -> [..., V]
        """The unembedding alone (no final norm, no soft cap): tied or untied."""
        if "lm_head" in self.decoder_parent:
            return self.decoder_parent["lm_head"](x)
        return _unwrap(self.backbone["embed_tokens"]).as_linear(x)

    def logits(self, residual):  # [..., D] -> [..., V]
        """What the model's own head makes of a residual: final norm, unembedding, soft cap."""
        return self.head(self.final_norm(residual))

    def head(self, normed):  # [..., D] -> [..., V]
        """The model's head after its final norm (unembedding, soft cap): ``head(backbone(x))``
        is ``model(x)``; applied to a few positions only, it skips the vocabulary-wide work
        at the rest."""
        out = self.unembed(normed)
        cap = self.dims.final_logit_softcap
        if cap:
            out = mx.tanh(out / cap) * cap
        return out

    def point_names(self) -> list[str]:
        """Every hook point this model has, in forward order."""
        names = ["embed"]
        for i in range(self.n_layers):
            names.append(f"resid_pre.{i}")
            names += [f"{kind}.{i}" for kind in SUB_MODULE_KINDS if self.site(i, kind)]
            names.append(f"resid_post.{i}")
        return names

    def parse(self, name: "str | HookPoint") -> HookPoint:
        """Validate a point name against this model; errors say what exists."""
        if isinstance(name, HookPoint):
            name = name.name
        if name == "embed":
            return HookPoint(-1, "embed")
        kind, _, index = name.partition(".")
        if kind not in BLOCK_KINDS or not index.lstrip("-").isdigit():
            raise HookPointError(
                f"unknown hook point {name!r}: expected 'embed' or '<kind>.<layer>' with kind in "
                f"{', '.join(BLOCK_KINDS)} (e.g. 'resid_post.3')"
            )
        layer = int(index)
        n = self.n_layers
        if not -n <= layer < n:
            raise HookPointError(
                f"hook point {name!r}: layer {layer} is out of range; this model has {n} layers (0..{n - 1})"
            )
        layer %= n
        if kind in SUB_MODULE_KINDS and self.site(layer, kind) is None:
            what = {"attn_out": "separable attention", "mlp_out": "separable MLP",
                    "attn_z": "attention output projection", "mlp_hidden": "dense MLP down projection "
                    "(mixture-of-experts layers have no single hidden activation)"}[kind]
            raise HookPointError(
                f"hook point {name!r}: block {layer} ({type(_unwrap(self.layers[layer])).__name__}) has no {what}"
            )
        return HookPoint(layer, kind)


def _child_site(container: Any, attr: str, reads_input: bool) -> Site | None:
    if isinstance(container, dict) and isinstance(container.get(attr), nn.Module):
        return Site(container, attr, reads_input)
    return None


def _unwrap(module: Any) -> Any:
    """The original module under any hook wrappers."""
    while getattr(module, "_is_hook_wrapper", False):
        module = module["inner"]
    return module
