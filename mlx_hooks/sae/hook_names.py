"""Hook point names of the SAE ecosystem, mapped onto Symbiont's points.

Symbiont's points (:mod:`mlx_hooks.points`) already use TransformerLens' kinds, so
most names map one to one, in both directions:

    TransformerLens (SAELens cfg.json)      Symbiont
    hook_embed                              embed
    blocks.{i}.hook_resid_pre               resid_pre.{i}
    blocks.{i}.hook_resid_post              resid_post.{i}
    blocks.{i}.hook_attn_out                attn_out.{i}
    blocks.{i}.hook_mlp_out                 mlp_out.{i}
    blocks.{i}.attn.hook_z                  attn_z.{i}       (flattened over heads)
    blocks.{i}.mlp.hook_post                mlp_hidden.{i}   (the down projection's input)

Symbiont's own names (``attn_z.3``, ``mlp_hidden.3``...) pass through.

EleutherAI sparsify names a hook point by the Hugging Face module whose *output* its
autoencoders read (the folder an SAE is saved in; sparsify reads a module's input only
for transcoders, which are refused): the output of decoder layer ``layers.{i}`` is the
residual stream after block i, so ``layers.{i}`` is ``resid_post.{i}``; the outputs of
``layers.{i}.mlp`` / ``layers.{i}.self_attn`` are ``mlp_out.{i}`` / ``attn_out.{i}`` on
llama-style blocks; ``embed_tokens`` is ``embed``. A model prefix (``model.``,
``gpt_neox.``...) is ignored. Gemma 2/3 normalise each sub-layer's output before adding
it, so there what the residual receives is the output of ``post_attention_layernorm`` /
``post_feedforward_layernorm``: those names map to ``attn_out.{i}`` / ``mlp_out.{i}``, and
:func:`sparsify_module_fits` refuses a module that is not the one the loaded model's
point reads (``layers.{i}.mlp`` on Gemma 2 is *before* the norm; ``post_attention_layernorm``
on a llama is the pre-MLP norm). sparsify's ``mlp.act_fn`` output is ``act(gate)``, which on
the gated MLPs of every family Symbiont loads is not the down projection's input
(``act(gate)·up``), so it has no Symbiont point and is refused with that reason.

Anything else (``hook_resid_mid``, per-head ``hook_q``, layer-norm outputs) has no
Symbiont point and is refused by name.
"""

from __future__ import annotations

import re

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "attn_z", "mlp_hidden")
"""Symbiont's per-block point kinds that SAEs read."""
_TL_SUFFIX = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "attn_out": "hook_attn_out",
              "mlp_out": "hook_mlp_out", "attn_z": "attn.hook_z", "mlp_hidden": "mlp.hook_post"}
_TL_KIND = {suffix: kind for kind, suffix in _TL_SUFFIX.items()}
_TL_BLOCK = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(s) for s in _TL_KIND) + r")$")
_SYMBIONT = re.compile(r"^(" + "|".join(KINDS) + r")\.(-?\d+)$")
_HF_LAYER = re.compile(r"^(?:.*\.)?(?:layers|h)[._](\d+)(?:\.([a-z_]+(?:\.[a-z_]+)?))?$")
_HF_SUFFIX = {None: "resid_post", "mlp": "mlp_out", "feed_forward": "mlp_out", "block_sparse_moe": "mlp_out",
              "self_attn": "attn_out", "attn": "attn_out", "attention": "attn_out",
              "post_feedforward_layernorm": "mlp_out", "post_attention_layernorm": "attn_out"}
_GATED_ACTIVATION = ("mlp.act_fn", "mlp.act")
_SUPPORTED = ("hook_embed, blocks.<i>.hook_resid_pre, blocks.<i>.hook_resid_post, blocks.<i>.hook_attn_out, "
              "blocks.<i>.hook_mlp_out, blocks.<i>.attn.hook_z, blocks.<i>.mlp.hook_post, layers.<i>, "
              "layers.<i>.mlp, layers.<i>.self_attn, layers.<i>.post_feedforward_layernorm, "
              "layers.<i>.post_attention_layernorm, embed_tokens")


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
        return f"{_TL_KIND[match.group(2)]}.{match.group(1)}"
    if match := _HF_LAYER.match(name):
        child = match.group(2)
        if child in _GATED_ACTIVATION:
            raise ValueError(
                f"hook {name!r} is the output of the MLP's activation function, act(gate): on gated MLPs "
                "(llama, mistral, qwen, gemma, phi3) the down projection reads act(gate)·up instead, so this "
                "has no Symbiont hook point (mlp_hidden.<i> is the down projection's input)"
            )
        if child in _HF_SUFFIX:
            return f"{_HF_SUFFIX[child]}.{match.group(1)}"
    raise ValueError(f"hook {name!r} has no Symbiont hook point (supported: {_SUPPORTED})")


def hook_name_for_point(point: str) -> str:
    """TransformerLens hook name (what SAELens writes as ``hook_name``) for a Symbiont point."""
    if point == "embed":
        return "hook_embed"
    match = _SYMBIONT.match(point)
    if match is None:
        raise ValueError(f"{point!r} is not a Symbiont hook point name (e.g. 'resid_post.3')")
    return f"blocks.{match.group(2)}.{_TL_SUFFIX[match.group(1)]}"


def layer_of_point(point: str) -> int:
    """Block index of a point (0 for ``embed``, as SAELens' ``hook_layer`` has it)."""
    match = _SYMBIONT.match(point)
    return int(match.group(2)) if match else 0


def sparsify_module_fits(module_name: str, point_kind: str, attn_out_attr: str, mlp_out_attr: str) -> str | None:
    """Why a sparsify module's output is not the Symbiont point it was mapped to, or None.

    ``attn_out_attr`` / ``mlp_out_attr``: the block children whose outputs the loaded
    model's ``attn_out`` / ``mlp_out`` read (see :mod:`mlx_hooks.architectures`).
    """
    match = _HF_LAYER.match(module_name.strip())
    child = match.group(2) if match else None
    if child is None or point_kind not in ("attn_out", "mlp_out"):
        return None
    expected = attn_out_attr if point_kind == "attn_out" else mlp_out_attr
    generic = ("self_attn", "attn", "attention") if point_kind == "attn_out" else ("mlp", "feed_forward", "block_sparse_moe")
    if child == expected or (child in generic and expected in generic):
        return None
    return (
        f"the SAE read the output of `{child}`, but on this model {point_kind} is the output of `{expected}` "
        f"(what the residual stream receives); pass the hook point explicitly if you mean a different point"
    )
