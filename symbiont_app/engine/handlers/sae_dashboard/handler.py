"""The feature dashboard's engine side: a latent's activation density, and the user's labels.

Density: the loaded SAE reads the activations of a fixed held-out text (the built-in
prompt set), once per loaded SAE; every latent's non-zero values are kept sparsely
(``[n_active]`` latent ids and values, a few hundred KB for a TopK SAE), so each latent's
histogram afterwards is a numpy call. The values are those of the model without the
chat's interventions (steering and clamps act inside a reply's generation only).

Labels: the user's labels live in ``labels.json`` beside the SAE's weights (the feature
records' convention, :mod:`mlx_hooks.sae.features`), except where that folder must not be
written: the shipped SAEs (inside the app, read-only once signed), a read-only folder, or
an SAE loaded from a single file. Those get ``<user data>/sae_labels/<sae id>-<digest>/``,
keyed by the weights' digest so labels never land on other weights; the loader merges it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlx_hooks.errors import SymbiontError

from ...panel_state import panel_state
from ...registry import HandlerContext, handles
from ...state import EngineState
from .messages import GetLatentDensity, LatentDensity, LatentLabelChanged, SetLatentLabel

DENSITY_KEY = "sae_density"
"""``state.extras`` key of the sparse values kept for the loaded SAE."""
LABELS_FOLDER_KEY = "sae_labels_folder"
DENSITY_CORPUS = "the 180 built-in prompts (mlx_hooks.sae.corpus)"
MAX_SEQ_LEN = 64


def _check_latent(state: EngineState, latent: int) -> int:
    if state.sae is None or state.loaded is None:
        raise SymbiontError("no SAE loaded: load one in the SAE panel")
    latent = int(latent)
    if not 0 <= latent < state.sae.cfg.d_sae:
        raise SymbiontError(f"latent {latent} is out of range for SAE {state.sae_id} (0..{state.sae.cfg.d_sae - 1})")
    return latent


@dataclass(frozen=True)
class CorpusValues:
    """Every non-zero latent value of the loaded SAE over the density corpus, as flat arrays."""

    ids: np.ndarray
    """``[n]`` latent of each value."""
    values: np.ndarray
    """``[n]`` the values (> 0)."""
    texts: np.ndarray
    """``[n]`` index of the corpus text each value was read in."""
    n_tokens: int
    """Tokens read (the first of each window skipped)."""
    corpus: tuple[str, ...]
    """The texts."""


def sparse_values(state: EngineState, ctx: HandlerContext | None = None) -> CorpusValues:
    """Every non-zero latent value over the corpus (read once per loaded SAE, then kept)."""
    import mlx.core as mx

    from mlx_hooks.sae.corpus import builtin_prompts
    from mlx_hooks.sae.text_activations import iter_text_activations, tokenize_texts

    kept = state.extras.get(DENSITY_KEY)
    if kept is not None and kept[0] is state.sae:
        return kept[1]
    sae, loaded = state.sae, state.loaded
    corpus = tuple(builtin_prompts())
    token_lists = tokenize_texts(loaded.tokenizer, corpus)
    total = sum(max(0, len(t) - 1) for t in token_lists)
    ids, values, texts, seen = [], [], [], 0
    for batch in iter_text_activations(loaded.model, token_lists, sae.cfg.hook_point, max_seq_len=MAX_SEQ_LEN,
                                       tokens_per_batch=1024, skip_first=True,
                                       should_stop=ctx.is_cancelled if ctx else None):
        latents = sae.encode(batch.acts)  # [N, d_sae]
        mx.eval(latents)
        dense = np.array(latents)
        rows, cols = np.nonzero(dense > 0)
        ids.append(cols.astype(np.int32))
        values.append(dense[rows, cols].astype(np.float32))
        texts.append(batch.text_index[rows].astype(np.int32))
        seen += dense.shape[0]
        if ctx is not None:
            ctx.progress(seen, max(total, 1), "latent densities over the built-in prompts")
    if ctx is not None and ctx.is_cancelled():
        raise SymbiontError("cancelled")  # nothing kept: a half-read corpus would under-count
    flat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    result = CorpusValues(flat(ids, np.int32), flat(values, np.float32), flat(texts, np.int32), seen, corpus)
    state.extras[DENSITY_KEY] = (sae, result)
    return result


def latent_histogram(ids: np.ndarray, values: np.ndarray, latent: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(edges [bins + 1], counts [bins])`` of the latent's non-zero values, from 0 to its largest."""
    mine = values[ids == latent]
    top = float(mine.max()) if mine.size else 1.0
    counts, edges = np.histogram(mine, bins=bins, range=(0.0, top))
    return edges, counts


@handles(GetLatentDensity)
def density(state: EngineState, request: GetLatentDensity, ctx: HandlerContext) -> None:
    latent = _check_latent(state, request.latent)
    kept = sparse_values(state, ctx)
    edges, counts = latent_histogram(kept.ids, kept.values, latent, max(1, int(request.bins)))
    ctx.emit(LatentDensity(request_id=request.request_id, latent=latent, edges=edges, counts=counts,
                           n_tokens=int(kept.n_tokens),
                           n_active=int(counts.sum()), corpus=DENSITY_CORPUS))


# -- labels ------------------------------------------------------------------------------------------------
def _writable_folder(path: Path) -> bool:
    from ....bundle import inside, shipped_sae_root

    return path.is_dir() and os.access(path, os.W_OK) and not inside(path, shipped_sae_root())


def labels_folder(state: EngineState) -> Path:
    """Where the loaded SAE's user labels are kept (see the module docstring)."""
    from mlx_hooks.sae.saving import weights_digest

    from ....bundle import user_data_dir

    kept = state.extras.get(LABELS_FOLDER_KEY)
    if kept is not None and kept[0] is state.sae:
        return kept[1]  # the digest reads every weight: once per loaded SAE
    path = Path(panel_state(state).sae_path)
    if not _writable_folder(path):
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in state.sae.cfg.sae_id)
        path = user_data_dir() / "sae_labels" / f"{safe_id}-{weights_digest(state.sae)[:16]}"
    state.extras[LABELS_FOLDER_KEY] = (state.sae, path)
    return path


def user_labels(state: EngineState) -> dict[int, str]:
    from mlx_hooks.sae.features import load_labels

    return load_labels(labels_folder(state))


def auto_label_of(state: EngineState, latent: int) -> str:
    records = panel_state(state).records
    return records.records[latent].auto_label if records is not None else ""


def merge_user_labels(state: EngineState) -> None:
    """Give the loaded SAE's labels the user's (called after a load; the user's win over automatic ones)."""
    user = user_labels(state)
    if not user:
        return
    sae = state.sae
    labels = np.array(sae.labels if sae.labels is not None else [""] * sae.cfg.d_sae, dtype=object)
    for latent, text in user.items():
        if 0 <= latent < sae.cfg.d_sae:
            labels[latent] = text
    sae.labels = labels.astype(str)
    records = panel_state(state).records
    if records is not None:
        records.user_labels = dict(user)


@handles(SetLatentLabel)
def set_label(state: EngineState, request: SetLatentLabel, ctx: HandlerContext) -> None:
    from mlx_hooks.sae.features import LABELS_FILE, set_label as write_label

    latent = _check_latent(state, request.latent)
    folder = labels_folder(state)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        user = write_label(folder, latent, request.text)  # atomic write of labels.json
    except OSError as exc:
        raise SymbiontError(f"{folder / LABELS_FILE}: the label could not be saved ({exc})") from exc
    sae = state.sae
    labels = np.array(sae.labels if sae.labels is not None else [""] * sae.cfg.d_sae, dtype=object)
    text = user.get(latent, "")
    labels[latent] = text or auto_label_of(state, latent)
    sae.labels = labels.astype(str)
    records = panel_state(state).records
    if records is not None:
        records.user_labels = dict(user)
    source = "user" if text else "auto" if labels[latent] else "none"
    ctx.emit(LatentLabelChanged(request_id=request.request_id, latent=latent, label=str(labels[latent]), source=source,
                                path=str(folder / LABELS_FILE)))
