"""The sparse-probing report: where a property is readable and by how many units.

For each (set, kind): the best layer of the dense probe, the best single unit (k = 1) and its
layer, and the smallest k whose F1 is within 0.05 of the dense probe's at the dense probe's
best layer — "how many units carry this property". A property carried by a single neuron shows
a k = 1 F1 near the dense one; one carried only by combinations (superposition) needs larger k.
"""

from __future__ import annotations

from pathlib import Path

from ..reporting import run_section, write_report_files
from .report_text import cell

CLOSE_TO_DENSE = 0.05
"""A k-sparse probe "matches" the dense one when its F1 is at most this much lower."""


def _layer_number(point: str) -> str:
    return point.split(".")[-1] if point[-1].isdigit() else point


def _by_k(values: dict) -> dict:
    """``{k: value}`` in numeric order of k (JSON files keep keys sorted as text: 1, 16, 2, ...)."""
    return {k: values[k] for k in sorted(values, key=int)}


def summarize_kind(result: dict) -> dict:
    layers = result["layers"]
    best = max(layers, key=lambda r: r["dense_f1"])  # first of equals: the earliest layer
    best_one = max(layers, key=lambda r: r["f1"]["1"])
    ks = sorted(int(k) for k in best["f1"])
    enough = next((k for k in ks if best["f1"][str(k)] >= best["dense_f1"] - CLOSE_TO_DENSE), None)
    return {"best_point": best["point"], "best_dense_f1": best["dense_f1"], "best_f1_by_k": _by_k(best["f1"]),
            "k_matching_dense": enough, "best_single_point": best_one["point"], "best_single_f1": best_one["f1"]["1"],
            "best_single_unit": best_one["top_units"][0] if best_one["top_units"] else None}


def summarize(results: dict[str, dict[str, dict]], sets_info: dict[str, dict], settings: dict) -> dict:
    return {"settings": settings, "sets": sets_info,
            "by_set": {name: {kind: summarize_kind(r) for kind, r in kinds.items()} for name, kinds in results.items()}}


def _unit_text(unit: dict | None) -> str:
    if not unit:
        return "—"
    label = f" “{unit['label']}”" if unit.get("label") else ""
    return f"#{unit['unit']}{label} (effect {unit['effect']:+.2f})"


def render_markdown(summary: dict, results: dict, run_info: dict | None = None) -> str:
    s = summary["settings"]
    lines = ["# Sparse probing", "",
             "k-sparse logistic-regression probes (Gurnee et al. 2023, \"Finding Neurons in a Haystack\") on each "
             f"layer's activations, pooled per text ({s['pooling']}). Units are chosen by "
             f"{'standardised mean difference' if s['probe']['selection'] == 'mean_diff' else 'entry along an L1 path'} "
             f"inside each training fold; F1 of the positive class over {s['probe']['folds']}-fold grouped "
             "cross-validation (a pair's two texts always share a fold). Dense = all units.", "",
             "## Overview", "",
             "| set | kind | best dense F1 (layer) | F1 by k there | smallest k within 0.05 | best single unit: F1 (layer, unit) |",
             "|---|---|---|---|---|---|"]
    for name, kinds in summary["by_set"].items():
        for kind, r in kinds.items():
            by_k = ", ".join(f"{k}: {v:.2f}" for k, v in r["best_f1_by_k"].items())
            lines.append(f"| {name} | {kind} | {r['best_dense_f1']:.2f} ({_layer_number(r['best_point'])}) | {by_k} | "
                         f"{r['k_matching_dense'] or '> ' + str(max(int(k) for k in r['best_f1_by_k']))} | "
                         f"{r['best_single_f1']:.2f} ({_layer_number(r['best_single_point'])}, "
                         f"{cell(_unit_text(r['best_single_unit']))}) |")
    lines.append("")
    for name, kinds in results.items():
        info = summary["sets"].get(name, {})
        lines += [f"## {name}", "", f"{info.get('description', '')} Positive: {info.get('positive_label')} "
                  f"({info.get('positives')} texts), negative: {info.get('negative_label')} ({info.get('negatives')} texts).", ""]
        for kind, result in kinds.items():
            ks = list(_by_k(result["layers"][0]["f1"]))
            lines += [f"### {kind}: F1 by layer", "", "| layer | units | " + " | ".join(f"k={k}" for k in ks) + " | dense |",
                      "|---|---|" + "---|" * (len(ks) + 1)]
            for layer in result["layers"]:
                lines.append(f"| {_layer_number(layer['point'])} | {layer['units']} | "
                             + " | ".join(f"{layer['f1'][k]:.2f}" for k in ks) + f" | {layer['dense_f1']:.2f} |")
            best = summary["by_set"][name][kind]["best_single_point"]
            top = next(r for r in result["layers"] if r["point"] == best)["top_units"]
            lines += ["", f"Top units at {best} (effect: standardised mean difference, + = more active on "
                      f"{info.get('positive_label')}; weight: logistic regression on these {len(top)}):", "",
                      "| unit | effect | weight | mean (+) | mean (−) |" + (" label |" if any("label" in u for u in top) else ""),
                      "|---|---|---|---|---|" + ("---|" if any("label" in u for u in top) else "")]
            for u in top:
                lines.append(f"| {u['unit']} | {u['effect']:+.2f} | {u['weight']:+.2f} | {u['mean_positive']:.3g} | "
                             f"{u['mean_negative']:.3g} |" + (f" {cell(u.get('label', ''))} |" if "label" in u else ""))
            lines.append("")
    return "\n".join(lines + run_section(run_info))


def write_report(folder: str | Path, results: dict, sets_info: dict, settings: dict, run_info: dict | None = None,
                 plots: bool = True) -> dict:
    """Write report.md, summary.json and (``plots``) PNGs into ``folder``; returns the summary."""
    folder = Path(folder)
    summary = summarize(results, sets_info, settings)
    if run_info:
        summary["run"] = run_info
    files = None
    if plots and results:
        from .probe_plots import render_probe_plots

        files = render_probe_plots(results, folder / "plots")
    write_report_files(folder, summary, render_markdown(summary, results, run_info), files)
    return summary


__all__ = ["CLOSE_TO_DENSE", "render_markdown", "summarize", "summarize_kind", "write_report"]
