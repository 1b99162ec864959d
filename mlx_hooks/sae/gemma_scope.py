"""Gemma Scope SAEs (``params.npz``): which point of Gemma 2 each one reads, from its path.

Google publishes them as ``google/gemma-scope-{2b,9b,27b}-{pt,it}-{res,mlp,att}``
(SAELens also names ``-res-canonical`` etc. releases), one SAE per
``layer_{i}/width_{16k,65k,...}/average_l0_{n}/params.npz`` holding ``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_in]``, ``b_enc``, ``b_dec``, ``threshold [d_sae]`` (float32). No config:
the site comes from the repository name (also inside a hub cache path,
``models--google--gemma-scope-2b-pt-att/snapshots/<rev>/layer_3/...``) or from a folder
named after the site, and the caller can override it:

    res  -> resid_post.{i}   the block's output (``embedding/`` in a res repo: ``embed``)
    mlp  -> mlp_out.{i}      after Gemma 2's post-feedforward norm: what the residual receives
    att  -> attn_z.{i}       the heads' outputs before ``o_proj``, n_heads × head_dim wide
                             (2048 for Gemma 2 2B, whose residual is 2304 wide)

as SAELens' ``get_gemma_2_config_from_hf`` maps them (``hook_resid_post``,
``hook_mlp_out``, ``attn.hook_z``). The forward is JumpReLU without subtracting ``b_dec``
from the input (``apply_b_dec_to_input: False`` there).

The embedding SAEs were trained on the embedding before Gemma's √d_model scaling.
SAELens rescales their weights because TransformerLens' ``hook_embed`` holds the scaled
embedding; Symbiont's ``embed`` is the unscaled one, so the weights are used as published.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx

from ..errors import SAELoadError
from .files import read_npz, read_safetensors
from .model import SAEConfig

SITES = {"res": "resid_post", "mlp": "mlp_out", "att": "attn_z"}
"""Gemma Scope site (the repository suffix) -> Symbiont point kind."""
_FOLDER_SITES = {"res": "res", "resid": "res", "resid_post": "res", "mlp": "mlp", "mlp_out": "mlp",
                 "att": "att", "attn": "att", "attn_z": "att"}
_REPO = re.compile(r"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att)(?:-[a-z0-9_]+)*$")
# SAELens' width folders (get_gemma_2_config_from_hf): the number of latents each names.
WIDTHS = {"4k": 4096, "16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072, "262k": 262144,
          "524k": 524288, "1m": 1048576}


def site_from_path(path: Path) -> tuple[str | None, str | None]:
    """``(site, model_name)`` from a Gemma Scope path; the component nearest the file wins."""
    site = model = None
    for part in path.parts:
        repo = _REPO.search(part)  # also matches models--google--gemma-scope-2b-pt-res in a hub cache
        if repo:
            site = repo.group(3)
            model = f"gemma-2-{repo.group(1)}" + ("-it" if repo.group(2) == "it" else "")
        elif part.lower() in _FOLDER_SITES:
            site = _FOLDER_SITES[part.lower()]
    return site, model


def point_from_path(path: Path, site: str | None = None) -> str | None:
    """Symbiont point for a Gemma Scope path (``site`` overrides the one in the path)."""
    site = site or site_from_path(path)[0]
    layers = re.findall(r"(?:^|/)layer_(\d+)(?:/|$)", path.as_posix())
    if site == "res" and any(part == "embedding" for part in path.parts):
        return "embed"
    if site is None or not layers:
        return None
    return f"{SITES[site]}.{layers[-1]}"


def read_gemma_scope(location: Path, hook_point: str | None) -> tuple[SAEConfig, dict[str, mx.array]]:
    """Config and weights of a Gemma Scope ``params.npz`` (or the same arrays as safetensors)."""
    raw = read_npz(location) if location.suffix == ".npz" else read_safetensors(location)
    weights = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}  # as SAELens maps w_enc
    for name in ("W_enc", "threshold"):
        if name not in weights:
            raise SAELoadError(f"{location}: missing tensor(s) {name} (found: {', '.join(sorted(weights)) or 'none'})")
    if weights["W_enc"].ndim != 2:
        raise SAELoadError(f"{location}: W_enc has shape {list(weights['W_enc'].shape)}, expected [d_in, d_sae]")
    d_in, d_sae = (int(n) for n in weights["W_enc"].shape)
    width = re.search(r"(?:^|/)width_(\d+[km])(?:/|$)", location.as_posix())
    if width and width.group(1) in WIDTHS and WIDTHS[width.group(1)] != d_sae:
        raise SAELoadError(
            f"{location}: the folder width_{width.group(1)} means {WIDTHS[width.group(1)]} latents, "
            f"but W_enc has {d_sae} (shape {[d_in, d_sae]}): a mixed-up or partial download?"
        )
    point = hook_point or point_from_path(location)
    if point is None:
        raise SAELoadError(
            f"{location}: cannot tell the hook point from the path (expected a gemma-scope-…-res/-mlp/-att "
            "folder and layer_<i>); pass it (e.g. hook_point='resid_post.12', 'mlp_out.12' or 'attn_z.12')"
        )
    _, model_name = site_from_path(location)
    cfg = SAEConfig(
        d_in=d_in, d_sae=d_sae, architecture="jumprelu", hook_point=point, apply_b_dec_to_input=False,
        sae_id=location.parent.name or location.stem, model_name=model_name, source_format="gemma_scope",
    )
    return cfg, weights
