"""A resumable sparse-probing run (``symbiont probe``): labelled sets → activations → k-sparse probes per layer.

Folder layout::

    config.json                         model fingerprint, pooling, layers, probe settings, SAE (checked on resume)
    activations/<set>.safetensors       pooled activations of every point ([texts, units] each), labels, groups
    results/<set>/<kind>.json           per layer: F1 of every k and of the dense probe, the top units
    progress.jsonl, runs.json           progress for the app's lab panel; one entry per invocation
    report.md, summary.json, plots/     written by :mod:`.probe_report`

Units of work are (set, kind): a killed run loses at most the one in flight. More sets or point
kinds extend a folder; other settings are refused naming ``config.json``, and a set whose texts
changed under the same name is refused naming its activations file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..progress import ProgressLog
from ..run_folder import append_run, dump_json, owned, prepare_config, read_json, run_entry
from .experiments import SuperpositionError
from .model_activations import SAE_KIND, points_of, pooled_activations
from .probe_data import LabelledSet
from .sparse_probe import ProbeSettings, probe_table, top_units

FORMAT_VERSION = 1


@dataclass
class ProbeConfig:
    """What ``symbiont probe`` measures."""

    kinds: tuple[str, ...] = ("resid_post", "mlp_hidden")
    """Point kinds probed at every layer (and ``sae`` for an SAE's latents)."""
    layers: tuple[int, ...] | None = None
    """Layers to probe (None: all)."""
    pooling: str = "mean"
    """``mean`` over a text's tokens (position 0 left out) or the ``last`` token."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    """k values, folds, unit selection."""
    top: int = 8
    """Units listed per layer (and weighted by one logistic regression on them)."""

    def identity(self, fingerprint: dict, sae: dict | None) -> dict:
        return {"model": fingerprint, "pooling": self.pooling, "layers": None if self.layers is None else list(self.layers),
                "probe": {**asdict(self.probe), "k_values": list(self.probe.k_values)}, "top": self.top, "sae": sae}


def set_digest(data: LabelledSet) -> str:
    """sha256 over the texts, labels and groups (a changed set under the same name is caught)."""
    payload = json.dumps([data.texts, data.labels, data.groups], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def activations_path(folder: Path, data: LabelledSet) -> Path:
    return folder / "activations" / f"{_safe(data.name)}.safetensors"


def result_path(folder: Path, data: LabelledSet, kind: str) -> Path:
    return folder / "results" / _safe(data.name) / f"{kind}.json"


def load_or_collect(folder: Path, data: LabelledSet, loaded, points: list[str], sae, pooling: str,
                    on_text: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """The set's pooled activations: read from ``activations/`` when there with every point, else computed and saved."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from mlx_hooks.atomic_io import atomic_path

    path = activations_path(folder, data)
    want = points + ([SAE_KIND] if sae is not None else [])
    digest = set_digest(data)
    if path.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path), "np") as handle:
                stored_digest = (handle.metadata() or {}).get("set_sha256")
            arrays = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SuperpositionError(f"{path}: unreadable activations file ({exc}); delete it to recompute") from None
        if stored_digest != digest:
            raise SuperpositionError(f"{path}: made from other texts for the set {data.name!r}; use another output "
                                     "folder or delete the file")
        if all(p in arrays for p in want):
            return {p: arrays[p] for p in want}
    arrays = pooled_activations(loaded.model, loaded.tokenizer, data.texts, points, sae, pooling, on_text)
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
                  metadata={"set_sha256": digest, "set": data.name, "pooling": pooling})
    return arrays


def probe_kind(arrays: dict[str, np.ndarray], names: list[str], data: LabelledSet, config: ProbeConfig,
               labels: np.ndarray | None = None) -> dict:
    """Probe tables and top units of every point in ``names`` (one layer each)."""
    y, groups = data.y, np.asarray(data.groups)
    layers = []
    for name in names:
        x = arrays[name]
        table = probe_table(x, y, groups, config.probe)
        units = top_units(x, y, config.probe, config.top)
        if labels is not None:
            for u in units:
                u["label"] = str(labels[u["unit"]])
        layers.append({"point": name, "units": int(x.shape[1]), **table, "top_units": units})
    return {"set": data.name, "layers": layers}


@dataclass
class ProbeRunSummary:
    folder: Path
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def run_probes(loaded, sets: list[LabelledSet], config: ProbeConfig, out_dir: str | os.PathLike, sae=None,
               sae_info: dict | None = None, progress: Callable[[str], None] | None = None) -> ProbeRunSummary:
    """Run (or resume) every missing (set, kind) in ``out_dir``. Does not write the report."""
    folder = Path(out_dir)
    kinds = [k for k in config.kinds if k != SAE_KIND]
    if SAE_KIND in config.kinds and sae is None:
        raise SuperpositionError("probing 'sae' latents needs an SAE (--sae PATH)")
    by_kind = points_of(loaded.model, kinds, config.layers) if kinds else {}  # a bad kind or layer: refused here
    names = [p for points in by_kind.values() for p in points]
    with owned(folder, SuperpositionError):
        prepare_config(folder / "config.json", {"format": FORMAT_VERSION, "lab": "probe",
                                                "settings": config.identity(loaded.fingerprint.to_dict(), sae_info)},
                       expect={"lab": "probe"}, kind="a sparse-probing run configuration", error=SuperpositionError)
        return _run(loaded, sets, config, folder, sae, names, by_kind, progress or (lambda m: None))


def _run(loaded, sets, config, folder, sae, names, by_kind, say) -> ProbeRunSummary:
    summary = ProbeRunSummary(folder)
    kinds = list(by_kind) + ([SAE_KIND] if SAE_KIND in config.kinds else [])
    total = len(sets) * len(kinds)
    log = ProgressLog(folder)
    done = 0
    started = time.perf_counter()
    interrupted = True
    try:
        for data in sets:
            pending = [k for k in kinds if not result_path(folder, data, k).exists()]
            summary.skipped += [f"{data.name}/{k}" for k in kinds if k not in pending]
            if not pending:
                done += len(kinds)
                say(f"{data.name}: already done in {folder}, not recomputed")
                continue
            done += len(kinds) - len(pending)
            say(f"{data.name}: activations of {len(data.texts)} texts ...")
            arrays = load_or_collect(folder, data, loaded, names, sae, config.pooling,
                                     lambda i, n, d=done: log.emit(f"{data.name}: activations", d + 0.5 * i / n, total,
                                                                   f"text {i}/{n}"))
            for kind in pending:
                points = [SAE_KIND] if kind == SAE_KIND else by_kind[kind]
                labels = getattr(sae, "labels", None) if kind == SAE_KIND else None
                t0 = time.perf_counter()
                result = probe_kind(arrays, points, data, config, labels)
                if kind == SAE_KIND:
                    result["layers"][0]["point"] = f"sae@{sae.cfg.hook_point}"
                dump_json(result_path(folder, data, kind), result)
                done += 1
                best = max(result["layers"], key=lambda r: r["dense_f1"])
                log.emit(f"{data.name}/{kind}", done, total, f"{time.perf_counter() - t0:.1f} s",
                         f1_k1=max(r["f1"]["1"] for r in result["layers"]), dense_f1=best["dense_f1"])
                say(f"{data.name}/{kind}: best dense F1 {best['dense_f1']:.2f} at {best['point']}, best 1-unit F1 "
                    f"{max(r['f1']['1'] for r in result['layers']):.2f}")
                summary.computed.append(f"{data.name}/{kind}")
        interrupted = False
        log.emit("done", total, total, "all sets probed")
    finally:
        summary.wall_s = time.perf_counter() - started
        append_run(folder, run_entry(summary.wall_s, interrupted, summary.computed), SuperpositionError, strict=False)
    return summary


def load_results(folder: Path, sets: list[LabelledSet], kinds: list[str]) -> dict[str, dict[str, dict]]:
    """``{set: {kind: result}}`` of what is stored."""
    out = {}
    for data in sets:
        for kind in kinds:
            path = result_path(folder, data, kind)
            if path.exists():
                result = read_json(path, "probe result", SuperpositionError)
                if not isinstance(result, dict) or not isinstance(result.get("layers"), list):
                    raise SuperpositionError(f"{path}: not a probe result; delete it to recompute")
                out.setdefault(data.name, {})[kind] = result
    return out


__all__ = ["ProbeConfig", "ProbeRunSummary", "activations_path", "load_or_collect", "load_results", "probe_kind",
           "result_path", "run_probes", "set_digest"]
