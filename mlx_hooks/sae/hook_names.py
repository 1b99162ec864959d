"""Hook point names of the SAE ecosystem, mapped onto Symbiont's points.

Symbiont's points (:mod:`mlx_hooks.points`) already use TransformerLens' kinds, so
most names map one to one:

    TransformerLens (SAELens cfg.json)      Symbiont
    hook_embed                              embed
    blocks.{i}.hook_resid_pre               resid_pre.{i}
    blocks.{i}.hook_resid_post              resid_post.{i}
    blocks.{i}.hook_attn_out                attn_out.{i}
    blocks.{i}.hook_mlp_out                 mlp_out.{i}

EleutherAI sparsify names a hook point by the Hugging Face module whose *output* it
read (the folder an SAE is saved in): the output of decoder layer ``layers.{i}`` is the
residual stream after block i, so ``layers.{i}`` is ``resid_post.{i}``; the outputs of
``layers.{i}.mlp`` / ``layers.{i}.self_attn`` are ``mlp_out.{i}`` / ``attn_out.{i}``;
``embed_tokens`` is ``embed``. A model prefix (``model.``, ``gpt_neox.``...) is ignored.

Anything else (``hook_resid_mid``, per-head ``attn.hook_z``, layer-norm outputs) has no
Symbiont point and is refused by name.
"""

from __future__ import annotations

import re

_TL_BLOCK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")
_HF_LAYER = re.compile(r"^(?:.*\.)?(?:layers|h)[._](\d+)(?:\.(mlp|self_attn|attn|attention|feed_forward))?$")
_SYMBIONT = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out)\.(-?\d+)$")
_HF_SUFFIX = {None: "resid_post", "mlp": "mlp_out", "feed_forward": "mlp_out",
              "self_attn": "attn_out", "attn": "attn_out", "attention": "attn_out"}


def point_from_hook_name(name: str) -> str:
    """Symbiont point for a TransformerLens, sparsify/Hugging Face or Symbiont hook name.

    Raises ``ValueError`` naming the hook when it has no Symbiont equivalent.
    """
    name = name.strip()
    if name in ("embed", "hook_embed", "embed_tokens") or name.endswith(".embed_tokens"):
        return "embed"
    if match := _SYMBIONT.match(name):
        return f"{match.group(1)}.{match.group(2)}"
    if match := _TL_BLOCK.match(name):
        return f"{match.group(2)}.{match.group(1)}"
    if match := _HF_LAYER.match(name):
        return f"{_HF_SUFFIX[match.group(2)]}.{match.group(1)}"
    raise ValueError(
        f"hook {name!r} has no Symbiont hook point (supported: hook_embed, blocks.<i>.hook_resid_pre, "
        "blocks.<i>.hook_resid_post, blocks.<i>.hook_attn_out, blocks.<i>.hook_mlp_out, layers.<i>, "
        "layers.<i>.mlp, layers.<i>.self_attn, embed_tokens)"
    )


def hook_name_for_point(point: str) -> str:
    """TransformerLens hook name (what SAELens writes as ``hook_name``) for a Symbiont point."""
    if point == "embed":
        return "hook_embed"
    match = _SYMBIONT.match(point)
    if match is None:
        raise ValueError(f"{point!r} is not a Symbiont hook point name (e.g. 'resid_post.3')")
    return f"blocks.{match.group(2)}.hook_{match.group(1)}"


def layer_of_point(point: str) -> int:
    """Block index of a point (0 for ``embed``, as SAELens' ``hook_layer`` has it)."""
    match = _SYMBIONT.match(point)
    return int(match.group(2)) if match else 0
