"""Per-latent records for browsing an SAE, automatic labels, and the user's own labels.

For every latent, from held-out text streamed through the hooked model:

- its **top-activating contexts** (the token, ± ``window`` neighbours, the value);
- the **tokens its decoder direction promotes** (and suppresses) most: the model's
  unembedding applied to ``W_dec[i]`` directly, as a logit lens *without* the final
  norm. An RMS norm divides a residual by its own RMS, a per-token scalar that a lone
  direction does not have; the norm's elementwise gain is left out too, so the
  numbers are "logits per unit of the stored direction", and rankings are what the
  unembedding alone does with the direction;
- how often it fires (fraction of tokens with a value > 0), its maximum and its mean
  value when active.

An automatic short label is derived from those (the tokens it fires on most, then
the tokens it promotes). The user's labels live in ``labels.json`` beside the
weights, never in the records: regenerating records rewrites ``feature_records.json``
only, so edits survive. Records name the weights they describe (a digest), so stale
records are never attached to retrained weights.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import SAELoadError
from ..points import ModelAdapter
from .files import atomic_write_gzip_text, atomic_write_text, read_gzip_json, read_json
from .fit import check_fits
from .saving import weights_digest
from .model import SAE
from .text_activations import iter_text_activations, tokenize_texts, tokens_per_batch_for

# Compressed: the shipped SAE's records are 9.3 MB as JSON, 1-2 MB gzipped (sae_weights/ stays small).
RECORDS_FILE = "feature_records.json.gz"
LEGACY_RECORDS_FILE = "feature_records.json"
LABELS_FILE = "labels.json"
RECORDS_VERSION = 1


@dataclass(frozen=True)
class ContextExample:
    """One place in the held-out text where a latent fired strongly."""

    value: float
    """The latent's activation on the focus token."""
    text_index: int
    """Which text (index into the texts given to :func:`build_feature_records`)."""
    position: int
    """Index of the focus token within that text's tokens."""
    tokens: tuple[str, ...]
    """The focus token and its neighbours, each decoded on its own."""
    focus: int
    """Index of the focus token within ``tokens``."""


@dataclass(frozen=True)
class TokenEffect:
    """A token the latent's decoder direction pushes up (or down) through the unembedding."""

    token: int
    text: str
    logit: float
    """Logit per unit of the stored decoder direction (no final norm)."""


@dataclass
class FeatureRecord:
    """What is known about one latent."""

    index: int
    frequency: float
    """Fraction of the held-out tokens on which the latent is > 0."""
    max_activation: float
    mean_activation: float
    """Mean value over the tokens where it is active (0 if never)."""
    top_contexts: list[ContextExample]
    """Strongest first."""
    promoted: list[TokenEffect]
    """Most promoted tokens first."""
    suppressed: list[TokenEffect]
    """Most suppressed tokens first."""
    auto_label: str


@dataclass
class FeatureRecords:
    """Records of every latent of one SAE, plus the user's labels (kept in ``labels.json``)."""

    sae_id: str
    hook_point: str
    weights_digest: str
    """:func:`~mlx_hooks.sae.formats.weights_digest` of the weights these records describe."""
    n_tokens: int
    """Held-out tokens the statistics cover."""
    n_texts: int
    settings: dict
    """How they were built (window, contexts per latent, sequence length...)."""
    records: list[FeatureRecord]
    user_labels: dict[int, str] = field(default_factory=dict)
    """The user's labels by latent; they override the automatic ones. Saved in labels.json only."""

    def label(self, latent: int) -> str:
        return self.user_labels.get(latent) or self.records[latent].auto_label

    def labels(self) -> list[str]:
        return [self.label(i) for i in range(len(self.records))]

    @property
    def max_activations(self) -> np.ndarray:
        return np.array([r.max_activation for r in self.records], dtype=np.float32)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("user_labels")
        return {"version": RECORDS_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict, where: Path | str = RECORDS_FILE) -> "FeatureRecords":
        try:
            records = [
                FeatureRecord(
                    index=int(r["index"]), frequency=float(r["frequency"]), max_activation=float(r["max_activation"]),
                    mean_activation=float(r["mean_activation"]),
                    top_contexts=[ContextExample(float(c["value"]), int(c["text_index"]), int(c["position"]),
                                                 tuple(c["tokens"]), int(c["focus"])) for c in r["top_contexts"]],
                    promoted=[TokenEffect(int(t["token"]), str(t["text"]), float(t["logit"])) for t in r["promoted"]],
                    suppressed=[TokenEffect(int(t["token"]), str(t["text"]), float(t["logit"])) for t in r["suppressed"]],
                    auto_label=str(r["auto_label"]),
                )
                for r in data["records"]
            ]
            return cls(
                sae_id=str(data["sae_id"]), hook_point=str(data["hook_point"]), weights_digest=str(data["weights_digest"]),
                n_tokens=int(data["n_tokens"]), n_texts=int(data["n_texts"]), settings=dict(data.get("settings", {})),
                records=records,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SAELoadError(f"{where}: malformed feature records ({type(exc).__name__}: {exc})") from exc


# -- labels ------------------------------------------------------------------------------------------
def load_labels(folder: str | Path) -> dict[int, str]:
    """The user's labels stored beside the weights (empty if none)."""
    path = Path(folder) / LABELS_FILE
    if not path.exists():
        return {}
    data = read_json(path)
    labels = data.get("labels")
    if not isinstance(labels, dict):
        raise SAELoadError(f"{path}: expected {{\"labels\": {{\"<latent>\": \"<label>\", ...}}}}")
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except ValueError as exc:
        raise SAELoadError(f"{path}: latent keys must be integers ({exc})") from exc


def save_labels(folder: str | Path, labels: Mapping[int, str]) -> Path:
    path = Path(folder) / LABELS_FILE
    data = {"version": 1, "labels": {str(k): v for k, v in sorted(labels.items()) if v}}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False))
    return path


def set_label(folder: str | Path, latent: int, text: str | None) -> dict[int, str]:
    """Set (or with ``None``/empty text, remove) the user's label of one latent; returns all labels."""
    labels = load_labels(folder)
    if text and text.strip():
        labels[int(latent)] = text.strip()
    else:
        labels.pop(int(latent), None)
    save_labels(folder, labels)
    return labels


# -- records on disk --------------------------------------------------------------------------------
def save_feature_records(records: FeatureRecords, folder: str | Path) -> Path:
    """Write ``feature_records.json.gz`` (atomically, byte-stable); ``labels.json`` is left alone."""
    path = Path(folder) / RECORDS_FILE
    atomic_write_gzip_text(path, json.dumps(records.to_dict(), ensure_ascii=False, separators=(",", ":")))
    (Path(folder) / LEGACY_RECORDS_FILE).unlink(missing_ok=True)  # never two versions side by side
    return path


def load_feature_records(folder: str | Path) -> FeatureRecords | None:
    """Records stored in ``folder`` with the user's labels merged in; None if there are none."""
    path = Path(folder) / RECORDS_FILE
    if path.exists():
        data = read_gzip_json(path)
    elif (path := Path(folder) / LEGACY_RECORDS_FILE).exists():
        data = read_json(path)
    else:
        return None
    records = FeatureRecords.from_dict(data, path)
    records.user_labels = load_labels(folder)
    return records


def attach_records(sae: SAE, records: FeatureRecords) -> None:
    """Give ``sae`` its observed maxima and effective labels from ``records``."""
    if len(records.records) != sae.cfg.d_sae:
        raise SAELoadError(f"feature records cover {len(records.records)} latents; the SAE has {sae.cfg.d_sae}")
    sae.max_activations = records.max_activations
    sae.labels = np.array(records.labels(), dtype=str)


def attach_feature_info(sae: SAE, folder: str | Path) -> FeatureRecords | None:
    """Attach the records and labels stored beside the weights, when they describe these weights."""
    folder = Path(folder)
    records = load_feature_records(folder)
    if records is None:
        user = load_labels(folder)
        if user:
            labels = np.array([""] * sae.cfg.d_sae, dtype=object)
            for latent, text in user.items():
                if 0 <= latent < sae.cfg.d_sae:
                    labels[latent] = text
            sae.labels = labels.astype(str)
        return None
    if records.weights_digest != weights_digest(sae):
        warnings.warn(
            f"{folder / RECORDS_FILE}: describes other weights than {folder} holds now (retrained?); not attached. "
            "Rebuild them with build_feature_records.", stacklevel=2,
        )
        return None
    attach_records(sae, records)
    return records


# -- building ------------------------------------------------------------------------------------------
def visible(text: str) -> str:
    """A token's text made readable in one line."""
    stripped = text.strip()
    if stripped:
        return stripped if stripped.isprintable() else repr(stripped)[1:-1]  # control bytes escaped
    return {"\n": "\\n", "\t": "\\t", " ": "␣"}.get(text[:1], repr(text)[1:-1]) if text else "∅"


def auto_label(record: FeatureRecord, n_context: int = 2, n_promoted: int = 2) -> str:
    """A few words: the tokens it fires on most (weighted by value) → the tokens it promotes."""
    if record.frequency == 0 or not record.top_contexts:
        return "dead"
    fired: Counter = Counter()
    for example in record.top_contexts:
        fired[visible(example.tokens[example.focus])] += example.value
    left = "/".join(word for word, _ in fired.most_common(n_context))
    right = "/".join(visible(t.text) for t in record.promoted[:n_promoted])
    return f"{left} → {right}" if right else left


def token_effects(model: nn.Module, sae: SAE, n: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top/bottom ``n`` tokens of ``unembed(W_dec[i])`` per latent: ids and logits, ``[d_sae, n]`` each.

    In chunks of latents, so memory stays at ``chunk × vocab`` logits.
    """
    adapter = ModelAdapter(model)
    up_ids, up_vals, down_ids, down_vals = [], [], [], []
    for begin in range(0, sae.cfg.d_sae, chunk):
        directions = sae.W_dec[begin : begin + chunk]  # [c, d_in]
        weight_dtype = adapter.backbone["embed_tokens"].weight.dtype
        dtype = weight_dtype if weight_dtype in (mx.float32, mx.float16, mx.bfloat16) else mx.float32
        logits = adapter.unembed(directions.astype(dtype)).astype(mx.float32)  # [c, V]
        k = min(n, logits.shape[-1])
        top = mx.argpartition(-logits, k - 1, axis=-1)[:, :k]
        bottom = mx.argpartition(logits, k - 1, axis=-1)[:, :k]
        top_v, bottom_v = mx.take_along_axis(logits, top, axis=-1), mx.take_along_axis(logits, bottom, axis=-1)
        mx.eval(top, bottom, top_v, bottom_v)
        for ids, vals, out_i, out_v, sign in ((top, top_v, up_ids, up_vals, -1), (bottom, bottom_v, down_ids, down_vals, 1)):
            ids, vals = np.array(ids), np.array(vals)
            order = np.argsort(sign * vals, axis=-1, kind="stable")
            out_i.append(np.take_along_axis(ids, order, axis=-1))
            out_v.append(np.take_along_axis(vals, order, axis=-1))
    return (np.concatenate(up_ids), np.concatenate(up_vals), np.concatenate(down_ids), np.concatenate(down_vals))


def build_feature_records(
    sae: SAE,
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    n_contexts: int = 5,
    window: int = 6,
    n_tokens: int = 8,
    max_seq_len: int = 128,
    memory_budget_bytes: int = 256 * 2**20,
    skip_first: bool = True,
    folder: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FeatureRecords:
    """Stream ``texts`` through the hooked model at the SAE's point and build every latent's record.

    Batches hold at most about ``memory_budget_bytes`` of activations and latents.
    Sets ``sae.max_activations`` and ``sae.labels``. With ``folder``, the records are
    saved there and the user's labels in it are merged in (they stay in labels.json).
    ``progress(tokens_done, tokens_total)`` is called after each batch.
    """
    check_fits(sae, model)
    point, d_sae = sae.cfg.hook_point, sae.cfg.d_sae
    token_lists = tokenize_texts(tokenizer, texts)
    total = sum(max(0, len(t) - int(skip_first) * -(-len(t) // max_seq_len)) for t in token_lists)
    batch_tokens = tokens_per_batch_for(memory_budget_bytes, sae.cfg.d_in, d_sae, max_seq_len)
    count = np.zeros(d_sae, dtype=np.int64)
    sums = np.zeros(d_sae, dtype=np.float64)
    maxima = np.zeros(d_sae, dtype=np.float32)
    # Running top contexts per latent: values and (text, position) of each, [M, d_sae].
    top_vals = np.full((n_contexts, d_sae), -np.inf, dtype=np.float32)
    top_text = np.zeros((n_contexts, d_sae), dtype=np.int64)
    top_pos = np.zeros((n_contexts, d_sae), dtype=np.int64)
    seen = 0
    for batch in iter_text_activations(model, token_lists, point, max_seq_len=max_seq_len, tokens_per_batch=batch_tokens,
                                       skip_first=skip_first, should_stop=should_stop):
        latents = sae.encode(batch.acts)  # [N, d_sae]
        m = min(n_contexts, latents.shape[0])
        idx = mx.argpartition(-latents, m - 1, axis=0)[:m]  # [m, d_sae] rows of the m largest per latent
        vals = mx.take_along_axis(latents, idx, axis=0)
        stats = [(latents > 0).sum(axis=0), latents.sum(axis=0), latents.max(axis=0), idx, vals]
        mx.eval(stats)
        active, total_value, batch_max, idx, vals = (np.array(s) for s in stats)
        count += active
        sums += total_value
        np.maximum(maxima, batch_max, out=maxima)
        # Merge the batch's best with the running best, keep the n_contexts largest per latent.
        all_vals = np.concatenate([top_vals, vals])
        all_text = np.concatenate([top_text, batch.text_index[idx]])
        all_pos = np.concatenate([top_pos, batch.position[idx]])
        keep = np.argsort(-all_vals, axis=0, kind="stable")[:n_contexts]
        top_vals = np.take_along_axis(all_vals, keep, axis=0)
        top_text = np.take_along_axis(all_text, keep, axis=0)
        top_pos = np.take_along_axis(all_pos, keep, axis=0)
        seen += batch.acts.shape[0]
        if progress is not None:
            progress(seen, total)

    up_ids, up_vals, down_ids, down_vals = token_effects(model, sae, n_tokens)
    decoded: dict[int, str] = {}

    def piece(token: int) -> str:
        if token not in decoded:
            decoded[token] = tokenizer.decode([token])
        return decoded[token]

    records = []
    for i in range(d_sae):
        contexts = []
        for j in range(n_contexts):
            if not top_vals[j, i] > 0:
                break
            text, pos = int(top_text[j, i]), int(top_pos[j, i])
            tokens = token_lists[text]
            lo, hi = max(0, pos - window), min(len(tokens), pos + window + 1)
            contexts.append(ContextExample(float(top_vals[j, i]), text, pos, tuple(piece(t) for t in tokens[lo:hi]), pos - lo))
        record = FeatureRecord(
            index=i, frequency=float(count[i] / max(seen, 1)), max_activation=float(maxima[i]),
            mean_activation=float(sums[i] / count[i]) if count[i] else 0.0, top_contexts=contexts,
            promoted=[TokenEffect(int(t), piece(int(t)), float(v)) for t, v in zip(up_ids[i], up_vals[i])],
            suppressed=[TokenEffect(int(t), piece(int(t)), float(v)) for t, v in zip(down_ids[i], down_vals[i])],
            auto_label="",
        )
        record.auto_label = auto_label(record)
        records.append(record)
    result = FeatureRecords(
        sae_id=sae.cfg.sae_id, hook_point=point, weights_digest=weights_digest(sae), n_tokens=seen, n_texts=len(texts),
        settings={"n_contexts": n_contexts, "window": window, "n_tokens": n_tokens, "max_seq_len": max_seq_len,
                  "skip_first": skip_first},
        records=records,
    )
    if folder is not None:
        save_feature_records(result, folder)
        result.user_labels = load_labels(folder)
    attach_records(sae, result)
    return result
