"""Hook point names (TransformerLens style) and where they live in an mlx-lm model.

Points:
  ``embed``          output of the token embedding              # [B, L, D]
  ``resid_pre.{i}``  input of decoder block i                   # [B, L, D]
  ``resid_post.{i}`` output of decoder block i                  # [B, L, D]
  ``attn_out.{i}``   output of block i's attention sub-module   # [B, L, D]
  ``mlp_out.{i}``    output of block i's MLP sub-module         # [B, L, D]

``attn_out``/``mlp_out`` exist only where the block has separable ``self_attn`` and
``mlp`` children (the common mlx-lm blocks: llama, mistral, qwen2/3, gemma, phi3...).
Negative layer indices count from the end (``resid_post.-1`` is the last block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.nn as nn

from .errors import HookPointError

BLOCK_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
ATTENTION_ATTRS = ("self_attn", "attention", "attn")
MLP_ATTRS = ("mlp", "feed_forward", "ffn")


@dataclass(frozen=True, order=True)
class HookPoint:
    """A parsed, validated hook point."""

    layer: int
    """Block index (0-based, already normalised from negative); -1 for ``embed``."""
    kind: str
    """One of ``embed``, ``resid_pre``, ``resid_post``, ``attn_out``, ``mlp_out``."""

    @property
    def name(self) -> str:
        return "embed" if self.kind == "embed" else f"{self.kind}.{self.layer}"

    def __str__(self) -> str:
        return self.name


class ModelAdapter:
    """Finds the parts of an mlx-lm causal LM that hooks and the lens need.

    mlx-lm models share a shape: ``model.<backbone>`` holds ``embed_tokens``,
    ``layers`` and a final ``norm``; the unembedding is ``model.lm_head`` or, with tied
    embeddings, ``embed_tokens.as_linear``. Anything else is refused by name.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.backbone_attr = self._find_backbone_attr(model)
        backbone = self.backbone
        for attr in ("layers", "embed_tokens", "norm"):
            if not hasattr(backbone, attr):
                raise HookPointError(
                    f"{type(model).__module__}.{type(model).__name__}: its backbone has no `{attr}`; "
                    "this architecture is not supported by the hooks"
                )

    @staticmethod
    def _find_backbone_attr(model: nn.Module) -> str:
        for attr in ("model", "transformer", "backbone"):
            child = model.get(attr) if isinstance(model, dict) else None
            if isinstance(child, nn.Module) and hasattr(child, "layers"):
                return attr
        raise HookPointError(
            f"{type(model).__module__}.{type(model).__name__}: no decoder backbone with `layers` found"
        )

    @property
    def backbone(self) -> nn.Module:
        return _unwrap(self.model[self.backbone_attr])

    @property
    def layers(self) -> list:
        return self.backbone["layers"]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        args = getattr(self.model, "args", None)
        for attr in ("hidden_size", "d_model", "dim"):
            if args is not None and hasattr(args, attr):
                return int(getattr(args, attr))
        return int(self.backbone["embed_tokens"].weight.shape[-1])

    def sub_module_attr(self, layer: int, kind: str) -> str | None:
        """Attribute name of block ``layer``'s attention or MLP child, or None."""
        block = _unwrap(self.layers[layer])
        names = ATTENTION_ATTRS if kind == "attn_out" else MLP_ATTRS
        for attr in names:
            if isinstance(block, dict) and isinstance(block.get(attr), nn.Module):
                return attr
        return None

    def final_norm(self, x):  # x: [..., D] -> [..., D]
        return _unwrap(self.backbone["norm"])(x)

    def unembed(self, x):  # x: [..., D] -> [..., V]
        """Logits from a residual that already went through the final norm."""
        if "lm_head" in self.model:
            return self.model["lm_head"](x)
        return _unwrap(self.backbone["embed_tokens"]).as_linear(x)

    def point_names(self) -> list[str]:
        """Every hook point this model has, in forward order."""
        names = ["embed"]
        for i in range(self.n_layers):
            names.append(f"resid_pre.{i}")
            if self.sub_module_attr(i, "attn_out"):
                names.append(f"attn_out.{i}")
            if self.sub_module_attr(i, "mlp_out"):
                names.append(f"mlp_out.{i}")
            names.append(f"resid_post.{i}")
        return names

    def parse(self, name: str | HookPoint) -> HookPoint:
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
        if kind in ("attn_out", "mlp_out") and self.sub_module_attr(layer, kind) is None:
            raise HookPointError(
                f"hook point {name!r}: block {layer} ({type(_unwrap(self.layers[layer])).__name__}) has no "
                f"separable {'attention' if kind == 'attn_out' else 'MLP'} sub-module"
            )
        return HookPoint(layer, kind)


def _unwrap(module: Any) -> Any:
    """The original module under any hook wrappers."""
    while getattr(module, "_is_hook_wrapper", False):
        module = module["inner"]
    return module
