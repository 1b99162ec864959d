"""The superposition lab's report.md text, from a :func:`~.report.summarize` summary."""

from __future__ import annotations

from .geometry import FRACTION_TOLERANCE, REPRESENTED_NORM


def cell(text: str) -> str:
    """Text for a markdown table cell (a literal | would end the cell)."""
    return str(text).replace("|", "\\|")


def _phase_lines(rows: dict) -> list[str]:
    lines = ["## Phase: 20 features into 5 dimensions, importance 0.9^i", "",
             "Represented features (‖W_i‖ > 0.5) and features per dimension (‖W‖²_F / m) at each sparsity S.", "",
             "| S | " + " | ".join(f"seed {s}: represented / per dim / loss" for s in rows) + " |",
             "|---|" + "---|" * len(rows)]
    first = rows[min(rows)]["by_sparsity"]
    for i, point in enumerate(first):
        cells = [f"{r['by_sparsity'][i]['represented']} / {r['by_sparsity'][i]['features_per_dimension']:.2f} / "
                 f"{r['by_sparsity'][i]['loss']:.4f}" for r in rows.values()]
        lines.append(f"| {point['sparsity']:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _geometry_lines(geo: dict) -> list[str]:
    lines = ["## Geometry: feature dimensionality (uniform importance)", "",
             f"Represented features whose D_i lies within ±{FRACTION_TOLERANCE} of each published fraction "
             f"(chance for uniformly spread values in the same range: {100 * geo['chance']:.0f}%).", "",
             "| seed | represented | D ≥ 0.345 | at a fraction | counts |", "|---|---|---|---|---|"]
    for seed, r in geo["seeds"].items():
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(r["counts"].items()))
        lines.append(f"| {seed} | {r['represented']} | {r['in_range']} | {100 * r['share_at_fractions']:.0f}% | {counts} |")
    return lines + ["", "Features below 0.345 are packed more densely than any published fraction (they appear at the "
                    "sparsest settings, where every feature is represented and D ≈ m/n).", ""]


def _xor_lines(rows: dict) -> list[str]:
    lines = ["## XOR: one-weight lesions of a two-layer network", "",
             "Per (input coding, hidden width), over the networks that learned XOR (of 32 per seed) and all their "
             "weights: share of lesions that lower all four mappings' margins by > 5%, mean number of mappings "
             "degraded, share where some mapping *improves*, mean share of the damage on the worst-hit mapping "
             "(0.25 = spread evenly, 1 = one mapping), share that flips a mapping.", "",
             "| variant | seed | learned | lesion | all 4 degrade | mappings degraded | one improves | worst share | flips |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, by_seed in rows.items():
        for seed, r in by_seed.items():
            if not r["summary"]:
                lines.append(f"| {key} | {seed} | {r['learned']}/{r['trained']} | — | | | | | |")
                continue
            for lesion, s in r["summary"].items():
                lines.append(f"| {key} | {seed} | {r['learned']}/{r['trained']} | {lesion} | {100 * s['all_four_degrade']:.0f}% | "
                             f"{s['mappings_degraded_mean']:.2f} | {100 * s['some_improve']:.0f}% | "
                             f"{s['largest_share_mean']:.2f} | {100 * s['flips_a_mapping']:.0f}% |")
    return lines + ["", "Delete = weight set to 0; perturb = weight halved. A change of the output bias raises the margin "
                    "of one target class and lowers the other's, so no network can have every lesion degrade all four.", ""]


def _interference_lines(data: dict) -> list[str]:
    lines = ["## Interference as the width fills", ""]
    if data["toy"]:
        lines += ["Toy models (uniform importance, sparse): mean over represented features of the largest positive "
                  "cos with another feature (what the ReLU does not filter), and the mean pairwise |cos|; random "
                  "directions in the same dimensions for comparison.", "",
                  "| seed | n/m | nearest positive cos | random | mean pairwise \\|cos\\| |", "|---|---|---|---|---|"]
        for seed, series in data["toy"].items():
            lines += [f"| {seed} | {s[0]:g} | {s[1]:.3f} | {s[2] if s[2] is None else f'{s[2]:.3f}'} | {s[3]:.3f} |"
                      for s in series]
        lines.append("")
    if data["sae"]:
        lines += ["SAE decoder directions (random subsets) against as many random directions: mean nearest-neighbour "
                  "|cos| and mean pairwise |cos| (the pairwise distribution of a random subset cannot depend on its "
                  "size; the nearest neighbour does).", "",
                  "| seed | latents per dim | nearest \\|cos\\| (SAE) | (random) | pairwise \\|cos\\| (SAE) | (random) |",
                  "|---|---|---|---|---|---|"]
        for seed, series in data["sae"].items():
            lines += [f"| {seed} | {s[0]:g} | {s[1]:.3f} | {s[2]:.3f} | {s[3]:.3f} | {s[4]:.3f} |" for s in series]
        lines.append("")
    return lines


def body(summary: dict) -> list[str]:
    s = summary["settings"]
    ex = summary["experiments"]
    lines = ["# Superposition: toy models, XOR lesions, interference", "",
             "Toy model x̂ = ReLU(WᵀWx + b), W ∈ R^{m×n}; each feature 0 with probability S, else uniform in [0, 1]; "
             "loss Σ_i I_i (x_i − x̂_i)² (Elhage et al. 2022, \"Toy Models of Superposition\"). "
             f"A feature is *represented* when ‖W_i‖ > {REPRESENTED_NORM}; its dimensionality is "
             "D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)².", ""]
    if summary["verdicts"]:
        lines += ["## Did the published findings reproduce?", "", "| finding | ours | published | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {cell(v['effect'])} | {cell(v['ours'])} | {cell(v['published'])} | **{v['verdict']}** |"
                  for v in summary["verdicts"]]
        lines += ["", "Verdicts per seed: *yes* when it held in every seed, *partly* in some, *no* in none (rules in "
                  "`symbiont_lab/superposition/report.py`).", ""]
    if "phase" in ex:
        lines += _phase_lines(ex["phase"])
    if "geometry" in ex:
        lines += _geometry_lines(ex["geometry"])
    if "xor" in ex:
        lines += _xor_lines(ex["xor"])
    if "interference" in ex:
        lines += _interference_lines(ex["interference"])
    lines += ["## Setup", "",
              f"- Toy models: Adam, learning rate {s['lr']:g}, {s['steps']} steps (published 10,000), batch {s['batch']} "
              f"(geometry and interference sweeps: {max(16, s['batch'] // 2)}); all sparsities of a sweep train as one "
              "stacked model; inputs drawn with NumPy from streams named by seed and experiment.",
              f"- Geometry: n = {s['geometry_features']}, m = {s['geometry_hidden']}, {s['geometry_points']} sparsities with "
              "1/(1 − S) log-spaced from 1.5 to 100. Interference: m = "
              f"{s['interference_hidden']}, n = 1, 2, 4, 8 × m, S = {s['interference_sparsity']}.",
              f"- XOR: 2-H-1 networks (H = {', '.join(map(str, s['xor_hidden']))}), tanh hidden, sigmoid output, binary "
              f"cross-entropy, Adam; {s['xor_networks']} networks per (coding, H) and seed; inputs coded {{0, 1}} and {{−1, +1}}."]
    if summary.get("sae"):
        sae = summary["sae"]
        lines.append(f"- SAE: {sae['sae_id']} at {sae['hook_point']} ({sae['d_sae']} latents in {sae['d_in']} dimensions; "
                     f"{sae['path']}).")
    lines.append("")
    return lines


__all__ = ["body", "cell"]
