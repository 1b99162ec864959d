"""A resumable NMF run (``symbiont nmf``): token activations → NMF / PCA / SAE at each k → components in context.

Folder layout::

    config.json                       model, point, texts, settings (checked on resume)
    tokens.safetensors                the raw activations [T, U], token ids, text index and position of each
                                      row, and the SAE's strongest latents per token (when an SAE is given)
    results/k016.json                 held-out FVU of NMF, PCA and the SAE at k = 16 (+ the components, at the main k)
    sae_k016/                         the small SAE's training checkpoint (a killed run resumes it)
    report.md, summary.json, plots/   written by :mod:`.nmf_report`

Position 0 of each text is left out (the attention sink, see :mod:`.model_activations`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..progress import ProgressLog
from ..run_folder import append_run, dump_json, owned, prepare_config, read_json, run_entry
from . import nmf as factor
from .experiments import SuperpositionError
from .model_activations import SAE_KIND, text_activations

FORMAT_VERSION = 1
SAE_TOP = 64
"""Strongest SAE latents kept per token (a TopK SAE has at most k active; 64 covers k = 32)."""


@dataclass
class NmfConfig:
    """What ``symbiont nmf`` factors and compares."""

    point: str = "mlp_hidden.15"
    """Hook point whose activations are factored, or ``sae`` for the SAE's latents."""
    components: int = 16
    """k of the factorisation whose components are described."""
    sweep: tuple[int, ...] = (4, 8, 16, 32)
    """k values at which NMF, PCA and an SAE are compared (``components`` is added)."""
    negatives: str = "clip"
    """``clip`` (positive part) or ``split`` (positive and negative parts as separate columns)."""
    held_out: float = 0.2
    """Fraction of the texts whose tokens are held out for the reconstruction comparison."""
    max_tokens: int = 8000
    """At most this many tokens are collected (texts in order until the cap)."""
    sae_steps: int = 400
    """Training steps of each comparison SAE (batch 256; ~40 passes over 3,000 tokens). The project's TopK
    trainer decodes sparsely (k gathered decoder rows per token), which costs most when every latent
    fires: ~65 ms a step at d_in = 1536 on this CPU."""
    seed: int = 0
    """Seed of the held-out split, NMF, PCA and the SAEs."""
    examples: int = 6
    """Top tokens shown per component."""

    def __post_init__(self):
        if not 0.0 < self.held_out < 1.0:
            raise SuperpositionError(f"held-out fraction must lie in (0, 1), got {self.held_out}")
        if self.components < 1 or min(self.sweep, default=1) < 1 or self.max_tokens < 10 or self.sae_steps < 1:
            raise SuperpositionError("components and every k ≥ 1, max_tokens ≥ 10, sae_steps ≥ 1")

    def ks(self) -> list[int]:
        return sorted(set(self.sweep) | {self.components})

    def identity(self, fingerprint: dict, texts_sha: str, sae: dict | None) -> dict:
        settings = {k: v for k, v in asdict(self).items() if k not in ("sweep", "components", "examples")}
        return {**settings, "model": fingerprint, "texts_sha256": texts_sha, "sae": sae}


def texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def collect_tokens(loaded, texts: Sequence[str], point: str, sae, max_tokens: int,
                   on_text: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Rows for every token but each text's first: activations, token ids, text index, position,
    and the SAE's :data:`SAE_TOP` strongest latents (indices, values) when an SAE is given."""
    reading = [] if point == SAE_KIND else [point]
    rows: dict[str, list] = {"acts": [], "tokens": [], "text": [], "position": [], "sae_index": [], "sae_value": []}
    count = 0
    for index, tokens, acts in text_activations(loaded.model, loaded.tokenizer, texts, reading, sae):
        keep = slice(1, None) if len(tokens) > 1 else slice(0, None)
        block = acts[SAE_KIND if point == SAE_KIND else point][keep]
        rows["acts"].append(block.astype(np.float32))
        rows["tokens"] += tokens[keep]
        rows["text"] += [index] * block.shape[0]
        rows["position"] += list(range(len(tokens)))[keep]
        if sae is not None:
            latents = acts[SAE_KIND][keep]
            top = np.argsort(-latents, axis=1)[:, :SAE_TOP]
            rows["sae_index"].append(top.astype(np.int32))
            rows["sae_value"].append(np.take_along_axis(latents, top, axis=1).astype(np.float32))
        count += block.shape[0]
        if on_text is not None:
            on_text(index + 1, len(texts))
        if count >= max_tokens:
            break
    out = {"acts": np.concatenate(rows["acts"])[:max_tokens], "tokens": np.asarray(rows["tokens"][:max_tokens], np.int32),
           "text": np.asarray(rows["text"][:max_tokens], np.int32),
           "position": np.asarray(rows["position"][:max_tokens], np.int32)}
    if sae is not None:
        out["sae_index"] = np.concatenate(rows["sae_index"])[:max_tokens]
        out["sae_value"] = np.concatenate(rows["sae_value"])[:max_tokens]
    return out


def load_or_collect(folder: Path, loaded, texts, config: NmfConfig, sae, say) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from mlx_hooks.atomic_io import atomic_path

    path = folder / "tokens.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SuperpositionError(f"{path}: unreadable token activations ({exc}); delete it to recompute") from None
    log = ProgressLog(folder)
    data = collect_tokens(loaded, texts, config.point, sae, config.max_tokens,
                          lambda i, n: log.emit("activations", i, n, f"text {i}/{n}"))
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in data.items()}, str(tmp))
    say(f"collected {len(data['tokens'])} tokens × {data['acts'].shape[1]} units at {config.point}")
    return data


def dense_latents(data: dict[str, np.ndarray], d_sae: int) -> np.ndarray | None:
    """``[T, d_sae]`` from the stored strongest latents (the rest are 0 or below the kept ones)."""
    if "sae_index" not in data:
        return None
    out = np.zeros((len(data["tokens"]), d_sae), dtype=np.float32)
    np.put_along_axis(out, data["sae_index"].astype(np.int64), data["sae_value"], axis=1)
    return out


def context(tokenizer, data: dict[str, np.ndarray], row: int, before: int = 8, after: int = 3) -> str:
    """The text around token ``row``, the token itself in [[ ]] (tokens of the same text only)."""
    same = np.flatnonzero(data["text"] == data["text"][row])
    position = int(np.searchsorted(same, row))
    window = same[max(0, position - before): position + after + 1]
    pieces = [tokenizer.decode([int(data["tokens"][r])]).replace("\n", "⏎") for r in window]
    pieces[list(window).index(row)] = f"[[{pieces[list(window).index(row)]}]]"
    return "".join(pieces)


def residual_directions(loaded, point: str, dirs: np.ndarray, sae) -> tuple[np.ndarray | None, str]:
    """Component directions mapped into the SAE's input space, and how (or why not)."""
    import mlx.core as mx

    from mlx_hooks.points import ModelAdapter

    if sae is None:
        return None, "no SAE given"
    if point == SAE_KIND:
        return np.array((mx.array(dirs.astype(np.float32)) @ sae.W_dec.astype(mx.float32))), "H · W_dec"
    adapter = ModelAdapter(loaded.model)
    hp = adapter.parse(point)
    if hp.kind in ("mlp_hidden", "attn_z"):
        if hp.kind == "mlp_hidden" and adapter.arch.mlp_out_attr != adapter.arch.mlp_attr:
            return None, "the MLP output is normalised before it joins the residual (no linear map)"
        if hp.kind == "attn_z" and adapter.arch.attn_out_attr != adapter.arch.attn_attr:
            return None, "the attention output is normalised before it joins the residual (no linear map)"
        site = adapter.site(hp.layer, hp.kind)
        project = site.container[site.attr]
        x = mx.array(dirs.astype(np.float32))
        mapped = project(x) - project(mx.zeros_like(x))  # the linear part (a bias is not a direction)
        out, how = np.array(mapped.astype(mx.float32)), f"through layer {hp.layer}'s {site.attr}"
    else:
        out, how = dirs, "as they are"
    if out.shape[1] != sae.cfg.d_in:
        return None, f"width {out.shape[1]} ≠ the SAE's {sae.cfg.d_in}"
    return out, how + f", against {sae.cfg.hook_point}'s decoder"


def run_nmf(loaded, texts: Sequence[str], config: NmfConfig, out_dir, sae=None, sae_info: dict | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) every k of ``config`` in ``out_dir``; returns ``{k: result}``. Does not write the report."""
    from .sparse_probe import require_sklearn

    require_sklearn()
    if config.negatives not in factor.NEGATIVES:
        raise SuperpositionError(f"negatives must be one of {', '.join(factor.NEGATIVES)}, got {config.negatives!r}")
    if config.point == SAE_KIND and sae is None:
        raise SuperpositionError("factoring SAE latents (--point sae) needs an SAE (--sae PATH)")
    if config.point != SAE_KIND:
        from mlx_hooks.hooks import parse_point

        parse_point(loaded.model, config.point)  # a bad point is refused before any folder is made
    folder = Path(out_dir)
    say = progress or (lambda m: None)
    with owned(folder, SuperpositionError):
        prepare_config(folder / "config.json", {"format": FORMAT_VERSION, "lab": "nmf", "settings": config.identity(
            loaded.fingerprint.to_dict(), texts_digest(texts), sae_info)}, expect={"lab": "nmf"},
            kind="an NMF run configuration", error=SuperpositionError)
        from .nmf_components import describe_components

        started, computed, interrupted = time.perf_counter(), [], True
        try:
            data = load_or_collect(folder, loaded, texts, config, sae, say)
            x, dropped = factor.nonnegative(data["acts"], config.negatives)
            test = factor.held_out_rows(data["text"], config.held_out, config.seed)
            log, results = ProgressLog(folder), {}
            for step, k in enumerate(config.ks()):
                path = folder / "results" / f"k{k:03d}.json"
                if path.exists():
                    results[k] = read_json(path, "NMF result", SuperpositionError)
                    continue
                say(f"k = {k}: NMF, PCA, SAE ...")
                nmf, scores = factor.nmf_and_pca(x[~test], x[test], k, config.seed)
                scores["sae"] = factor.train_sae(x[~test], x[test], k, folder / f"sae_k{k:03d}", config.seed,
                                                 config.sae_steps)
                result = {"k": k, "fvu": scores, "tokens": {"train": int((~test).sum()), "held_out": int(test.sum())},
                          "negative_share_dropped": dropped, "units": int(x.shape[1])}
                if k == config.components:
                    result["components"] = describe_components(loaded, data, x, nmf, config, sae)
                dump_json(path, result)
                results[k] = result
                computed.append(k)
                log.emit(f"k = {k}", step + 1, len(config.ks()), "done", nmf_fvu=scores["nmf"]["test_fvu"],
                         pca_fvu=scores["pca"]["test_fvu"], sae_fvu=scores["sae"]["test_fvu"])
            interrupted = False
            log.emit("done", len(config.ks()), len(config.ks()), "all k finished")
        finally:
            if computed or interrupted:
                append_run(folder, run_entry(time.perf_counter() - started, interrupted, computed), SuperpositionError,
                           strict=False)
        return results


__all__ = ["NmfConfig", "collect_tokens", "context", "dense_latents", "residual_directions", "run_nmf", "texts_digest"]
