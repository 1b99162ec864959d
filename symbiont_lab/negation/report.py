"""Tables and verdicts: our numbers beside the published ones (``PUBLISHED_*`` below).

:func:`summarize` turns per-seed results into means, sample standard deviations and
paired differences (seeds share initial weights and data across the compared arms, so
differences are taken within a seed); :func:`effects` checks each published effect with a
stated rule; :func:`render_markdown` lays the tables out as published with our numbers
beside; :func:`write_report` writes ``report.md``, ``summary.json`` and the plots.

Verdict rule for an effect with a published size P and our paired mean difference d
(standard error s over n seeds): **yes** if d has P's sign, |d| > 2s and |d| ≥ P/2;
**partly** if the sign matches and |d| > 2s but |d| < P/2; **no** otherwise. Where only a
direction is published, yes/no on sign and |d| > 2s. Nothing here is fixed in advance:
every verdict is computed from the run's numbers.
"""

from __future__ import annotations

from pathlib import Path

from ..reporting import fmt, fmt_pub, paired, run_section, stat, verdict, write_report_files
from .experiments import REPRESENTATION_TASKS, NegationConfig, mix_name, soft_name
from .tasks import REPRESENTATIONS

PUBLISHED_SORTED = {  # metric -> variant -> (mean, sd); 20 seeds
    "easy": {"baseline": (100.0, 0.1), "concept": (97.7, 3.1)},
    "hard": {"baseline": (50.0, 0.2), "concept": (85.3, 7.0)},
    "extrapolation": {"baseline": (50.3, 0.7), "concept": (65.7, 7.6)},
}
PUBLISHED_COLLAPSE = {"gen0": (85.6, 4.9), "gen1": (72.8, 5.4), "gen2": (68.0, 5.7), "gen2_soft": (72.0, None)}
PUBLISHED_REPRESENTATION = {
    ("zigzag", "neighbour"): "≈ +40 points over standard",
    ("pivot", "anchor"): "up to 98% (+11 over standard)",
    ("pivot", "neighbour"): "below standard (hurts)",
}
METRIC_NAMES = {"easy": "easy acc (L=20)", "hard": "hard acc (L=20)", "extrapolation": "extrapolation (L=40)"}
INPUT_NAMES = {"standard": "standard x_t", "neighbour": "neighbour x_t − x_{t−1}", "anchor": "anchor x_t − x_0"}


# -- summaries -------------------------------------------------------------------------------------
def summarize(results: dict[str, dict[int, dict]], config: NegationConfig) -> dict:
    out: dict = {"settings": config.identity()}
    sorted_r = results.get("sorted") or {}
    if sorted_r:
        seeds = sorted(sorted_r)
        rows = {m: {v: stat(sorted_r[s][v][m] for s in seeds) for v in ("baseline", "concept")} for m in METRIC_NAMES}
        out["sorted"] = {"n": len(seeds), "rows": rows, "concept_minus_baseline": {
            m: paired((sorted_r[s]["concept"][m] for s in seeds), (sorted_r[s]["baseline"][m] for s in seeds))
            for m in METRIC_NAMES}}
    collapse = results.get("collapse") or {}
    if collapse:
        seeds = sorted(collapse)
        variants = [v for v in config.collapse_variants() if all(v in collapse[s] for s in seeds)]
        col = {"n": len(seeds), "gen0": {m: stat(collapse[s]["gen0"][m] for s in seeds) for m in METRIC_NAMES},
               "variants": {}}
        for v in variants:
            col["variants"][v] = {
                g: {m: stat(collapse[s][v][g][m] for s in seeds) for m in METRIC_NAMES} for g in ("gen1", "gen2")}
            col["variants"][v]["labels_wrong"] = {
                g: stat(collapse[s]["labels"][v][f"{g}_wrong"] for s in seeds) for g in ("gen1", "gen2")}
        hard = lambda s, v, g: collapse[s]["gen0"]["hard"] if g == "gen0" else collapse[s][v][g]["hard"]  # noqa: E731
        col["declines"] = {v: {
            "gen0_minus_gen1": paired((hard(s, v, "gen0") for s in seeds), (hard(s, v, "gen1") for s in seeds)),
            "gen1_minus_gen2": paired((hard(s, v, "gen1") for s in seeds), (hard(s, v, "gen2") for s in seeds)),
            "gen0_minus_gen2": paired((hard(s, v, "gen0") for s in seeds), (hard(s, v, "gen2") for s in seeds)),
        } for v in variants}
        if "hard" in variants:
            col["vs_hard_gen2"] = {v: paired((hard(s, v, "gen2") for s in seeds), (hard(s, "hard", "gen2") for s in seeds))
                                   for v in variants if v != "hard"}
        out["collapse"] = col
    rep = results.get("representation") or {}
    if rep:
        seeds = sorted(rep)
        table = {}
        for task in REPRESENTATION_TASKS:
            table[task] = {}
            for r in REPRESENTATIONS:
                get = lambda key: [rep[s][task][r][key] for s in seeds]  # noqa: E731
                table[task][r] = {"best": stat(get("best_extrapolation")), "final": stat(get("final_extrapolation")),
                                  "train_length": stat(get("train_length"))}
            table[task]["minus_standard"] = {
                r: paired((rep[s][task][r]["best_extrapolation"] for s in seeds),
                          (rep[s][task]["standard"]["best_extrapolation"] for s in seeds))
                for r in REPRESENTATIONS if r != "standard"}
        out["representation"] = {"n": len(seeds), "tasks": table}
    out["effects"] = effects(out, config)
    return out


def effects(summary: dict, config: NegationConfig) -> list[dict]:
    """Each published effect, ours beside it, with a verdict."""
    rows = []

    def add(name: str, published_text: str, published: float | None, diff: dict, note: str = "",
            direction: int = 1) -> None:
        rows.append({"effect": name, "published": published_text, "published_value": published,
                     "ours": diff, "verdict": verdict(diff, published, direction), "note": note})

    s = summary.get("sorted")
    if s:
        d = s["concept_minus_baseline"]
        add("hard negatives beat random negatives on hard negatives (L=20): concept − baseline",
            "+35.3 (85.3 vs 50.0)", 35.3, d["hard"])
        add("… and on extrapolation (L=40): concept − baseline", "+15.4 (65.7 vs 50.3)", 15.4, d["extrapolation"])
        add("concept gives up a little on easy negatives: baseline − concept", "+2.3 (100.0 vs 97.7)", 2.3,
            {**d["easy"], "mean": -d["easy"]["mean"], "min": -d["easy"]["max"], "max": -d["easy"]["min"]})
    c = summary.get("collapse")
    if c and "hard" in c["variants"]:
        dec = c["declines"]["hard"]
        add("collapse: Gen0 − Gen1 (hard labels)", "+12.8 (85.6 → 72.8)", 12.8, dec["gen0_minus_gen1"])
        add("collapse: Gen1 − Gen2 (hard labels)", "+4.8 (72.8 → 68.0)", 4.8, dec["gen1_minus_gen2"])
        add("collapse: Gen0 − Gen2 (hard labels)", "+17.6 (85.6 → 68.0)", 17.6, dec["gen0_minus_gen2"])
        if "soft" in c["variants"]:
            add("soft labels (distillation) collapse less: Gen2 soft − Gen2 hard", "+4.0 (72.0 vs 68.0)", 4.0,
                c["vs_hard_gen2"]["soft"])
        for t in config.soft_temperatures:
            v = soft_name(t)
            if v in c["variants"]:
                add(f"… soft labels at temperature {t:g}: Gen2 soft(T={t:g}) − Gen2 hard",
                    "+4.0 (published at the model's own temperature)", 4.0, c["vs_hard_gen2"][v])
        for x in config.mix_fractions:
            v = mix_name(x)
            if v not in c["variants"]:
                continue
            rows.append(mix_effect(v, x, c))
    r = summary.get("representation")
    if r:
        t = r["tasks"]
        add("zig-zag: neighbour difference − standard (best L=40)", "≈ +40", 40.0, t["zigzag"]["minus_standard"]["neighbour"])
        add("pivot: anchor difference − standard (best L=40)", "+11 (anchor up to 98%)", 11.0,
            t["pivot"]["minus_standard"]["anchor"], note=f"our best seed: {t['pivot']['anchor']['best']['max']:.1f}%")
        add("pivot: neighbour difference hurts: neighbour − standard (best L=40)", "negative (size not given)", None,
            t["pivot"]["minus_standard"]["neighbour"], direction=-1)
    return rows


def mix_effect(variant: str, fraction: float, collapse: dict) -> dict:
    """The essay's claim that x% ground truth prevents collapse, for one x.

    yes: no significant Gen0 → Gen2 decline remains (decline < 2 se) while the hard chain
    declines significantly; partly: the decline is significantly smaller than the hard
    chain's but still significant; no: not significantly smaller than the hard chain's.
    """
    decline = collapse["declines"][variant]["gen0_minus_gen2"]
    hard = collapse["declines"]["hard"]["gen0_minus_gen2"]
    improvement = collapse["vs_hard_gen2"][variant]
    if decline["n"] < 2:
        result = "n/a (needs ≥ 2 seeds)"
    elif not hard["mean"] > 2 * hard["se"]:
        result = "n/a (no collapse to prevent)"
    elif decline["mean"] < 2 * decline["se"]:
        result = "yes"
    elif improvement["mean"] > 2 * improvement["se"]:
        result = "partly"
    else:
        result = "no"
    return {"effect": f"{round(fraction * 100):g}% ground truth prevents collapse: Gen0 − Gen2 with {variant}",
            "published": "claim: 20–30% real data prevents collapse", "published_value": None, "ours": decline,
            "verdict": result,
            "note": f"hard chain Gen0 − Gen2 {hard['mean']:+.1f}; Gen2 {variant} − Gen2 hard {improvement['mean']:+.1f} "
                    f"± {improvement['se']:.1f} (se)"}


# -- rendering -------------------------------------------------------------------------------------
def _diff_text(d: dict) -> str:
    if d["n"] < 2:
        return f"{d['mean']:+.1f} (n={d['n']})"
    return f"{d['mean']:+.1f} ± {d['se']:.1f} (se, n={d['n']})"


def render_markdown(summary: dict, run_info: dict | None = None) -> str:
    lines = ["# Negation lab: our numbers beside the published ones", ""]
    s = summary.get("sorted")
    if s:
        lines += [f"## Sorted task, baseline (random negatives) vs concept (one-swap negatives)", "",
                  f"Mean ± sd over seeds — published: 20 runs; ours: {s['n']} seeds.", "",
                  "| metric | baseline, published | baseline, ours | concept, published | concept, ours |",
                  "|---|---|---|---|---|"]
        for m, name in METRIC_NAMES.items():
            lines.append(f"| {name} | {fmt_pub(PUBLISHED_SORTED[m]['baseline'])} | {fmt(s['rows'][m]['baseline'])} "
                         f"| {fmt_pub(PUBLISHED_SORTED[m]['concept'])} | {fmt(s['rows'][m]['concept'])} |")
        lines.append("")
    c = summary.get("collapse")
    if c:
        variants = list(c["variants"])
        head = ["generation", "published (hard labels)"] + [f"ours, {_variant_title(v)}" for v in variants]
        lines += ["## Collapse chain: hard acc (L=20)", "",
                  f"Each generation a fresh model trained on the previous one's labels; mean ± sd over {c['n']} "
                  "seeds. Gen0 (ground truth) is shared by all variants.", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines.append("| Gen0 | " + fmt_pub(PUBLISHED_COLLAPSE["gen0"]) + " | "
                     + " | ".join(fmt(c["gen0"]["hard"]) for _ in variants) + " |")
        for g, pub in (("gen1", fmt_pub(PUBLISHED_COLLAPSE["gen1"])),
                       ("gen2", f"{fmt_pub(PUBLISHED_COLLAPSE['gen2'])} (soft labels: {PUBLISHED_COLLAPSE['gen2_soft'][0]:.1f})")):
            lines.append(f"| Gen{g[-1]} | {pub} | " + " | ".join(fmt(c["variants"][v][g]["hard"]) for v in variants) + " |")
        for g in ("gen1", "gen2"):
            lines.append(f"| Gen{g[-1]} training labels wrong, % | — | "
                         + " | ".join(fmt(c["variants"][v]["labels_wrong"][g]) for v in variants) + " |")
        lines.append("")
    r = summary.get("representation")
    if r:
        lines += ["## Input representations: accuracy at L=40 (trained at L=6–12)", "",
                  f"Best checkpoint (every {summary['settings']['checkpoint_every']} steps, as published: "
                  f"\"best extrapolation acc\") and final, mean ± sd over {r['n']} seeds; max = best seed.", "",
                  "| task | input | published | ours, best (mean ± sd) | ours, best seed | ours, final | ours, L=12 |",
                  "|---|---|---|---|---|---|---|"]
        for task in REPRESENTATION_TASKS:
            for rep in REPRESENTATIONS:
                cell = r["tasks"][task][rep]
                lines.append(f"| {task} | {INPUT_NAMES[rep]} | {PUBLISHED_REPRESENTATION.get((task, rep), '—')} "
                             f"| {fmt(cell['best'])} | {cell['best']['max']:.1f} | {fmt(cell['final'])} "
                             f"| {fmt(cell['train_length'])} |")
        lines.append("")
    rows = summary.get("effects") or []
    if rows:
        lines += ["## Did each published effect reproduce?", "",
                  "Differences are paired within a seed (same initial weights and inputs); rule in "
                  "`symbiont_lab/negation/report.py`.", "",
                  "| effect | published | ours | reproduced |", "|---|---|---|---|"]
        for e in rows:
            ours = _diff_text(e["ours"]) + (f"; {e['note']}" if e.get("note") else "")
            lines.append(f"| {e['effect']} | {e['published']} | {ours} | {e['verdict']} |")
        lines.append("")
    lines += run_section(run_info)
    return "\n".join(lines)


def _variant_title(v: str) -> str:
    if v == "hard":
        return "hard labels"
    if v == "soft":
        return "soft labels"
    if v.startswith("softT"):
        return f"soft labels T={v[5:]}"
    return f"{v[3:]}% ground truth"


def write_report(folder: str | Path, results: dict, config: NegationConfig, run_info: dict | None = None,
                 plots: bool = True) -> dict:
    """Write report.md, summary.json and (``plots``) PNGs into ``folder``; returns the summary."""
    folder = Path(folder)
    summary = summarize(results, config)
    if run_info:
        summary["run"] = run_info
    files = None
    if plots:
        from .plots import render_plots

        files = render_plots(summary, folder / "plots")
    write_report_files(folder, summary, render_markdown(summary, run_info), files)
    return summary
