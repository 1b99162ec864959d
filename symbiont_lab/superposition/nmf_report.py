"""The NMF report: reconstruction of NMF, PCA and an SAE at each k, and the main k's components in context."""

from __future__ import annotations

from pathlib import Path

from ..reporting import run_section, write_report_files
from .report_text import cell

METHODS = ("nmf", "pca", "sae")
TITLES = {"nmf": "NMF", "pca": "PCA", "sae": "SAE (k latents)"}


def summarize(results: dict[int, dict], settings: dict) -> dict:
    rows = {int(k): {m: r["fvu"][m] for m in METHODS} for k, r in sorted(results.items())}
    best = {k: min(METHODS, key=lambda m: rows[k][m]["test_fvu"]) for k in rows}
    return {"settings": settings, "fvu": rows, "best_held_out": best}


def render_markdown(summary: dict, results: dict[int, dict], run_info: dict | None = None) -> str:
    s = summary["settings"]
    first = next(iter(results.values()))
    lines = ["# NMF of activations", "",
             f"Tokens × units at `{s['point']}` ({first['units']} columns, negative activations "
             + ("clipped to 0: " + f"{100 * first['negative_share_dropped']:.1f}% of the squared activation dropped"
                if s["negatives"] == "clip" else "split into separate positive and negative columns")
             + f"), factored into k non-negative components (scikit-learn NMF). {first['tokens']['train']} tokens fit, "
             f"{first['tokens']['held_out']} held out (whole texts).", "",
             "## Reconstruction at the same number of components", "",
             "Fraction of variance unexplained (FVU) of the non-negative matrix, held-out tokens (train in brackets). "
             "PCA: k centred principal components; SAE: a TopK SAE with k latents, all allowed to fire (a ReLU "
             f"autoencoder), {s['sae_steps']} steps.", "",
             "| k | " + " | ".join(TITLES[m] for m in METHODS) + " | best held-out |", "|---|---|---|---|---|"]
    for k, row in summary["fvu"].items():
        lines.append(f"| {k} | " + " | ".join(f"{row[m]['test_fvu']:.3f} ({row[m]['train_fvu']:.3f})" for m in METHODS)
                     + f" | {TITLES[summary['best_held_out'][k]]} |")
    lines.append("")
    main = next((r for r in results.values() if "components" in r), None)
    if main:
        comps = main["components"]
        lines += [f"## The {main['k']} components", "",
                  f"Ordered by their share of the reconstruction (Σ_t ‖W_tc H_c‖²). Top units: the largest entries of the "
                  f"component's direction. Best SAE latent by direction: {comps['direction_match']}; by activity: "
                  "Pearson r over the same tokens.", ""]
        for item in comps["items"]:
            units = ", ".join(f"#{u['unit']} ({u['weight']:+.2g})" for u in item["top_units"])
            lines += [f"### component {item['component']} — {100 * item['energy_share']:.1f}% of the reconstruction, "
                      f"used by {100 * item['tokens_using_it']:.0f}% of tokens", "", f"Top units: {units}", ""]
            for key, metric in (("sae_by_direction", "cos"), ("sae_by_activity", "r")):
                if key in item:
                    m = item[key]
                    what = "direction" if key == "sae_by_direction" else "activity"
                    lines.append(f"- best SAE latent by {what}: #{m['latent']} ({metric} = {m[metric]:.2f})"
                                 + (f" “{m['label']}”" if m["label"] else ""))
            lines += ["", "| use | context |", "|---|---|"]
            lines += [f"| {e['usage']:.3g} | {cell(e['context'])} |" for e in item["examples"]]
            lines.append("")
    return "\n".join(lines + run_section(run_info))


def write_report(folder: str | Path, results: dict[int, dict], settings: dict, run_info: dict | None = None,
                 plots: bool = True) -> dict:
    folder = Path(folder)
    summary = summarize(results, settings)
    if run_info:
        summary["run"] = run_info
    files = None
    if plots and results:
        from .nmf_plots import render_nmf_plots

        files = render_nmf_plots(summary, folder / "plots")
    write_report_files(folder, summary, render_markdown(summary, results, run_info), files)
    return summary


__all__ = ["METHODS", "render_markdown", "summarize", "write_report"]
