"""The inversion report: ``summary.md`` (tables, verdicts), ``summary.json`` and plots, from the stage files.

Units: held-out test prompts, pooled over seeds ((seed, prompt) pairs; the tasks are the same in
every seed). Accuracies carry a Student-t 95% CI over those units; comparisons are paired over them
with the subliminal lab's two-sided sign-flip permutation test; every p-value of the student table
and of the teachers' checks is Bonferroni-adjusted over all of them (× m, capped at 1). A verdict
is "yes" only when the adjusted p is below ``alpha`` and the difference has the asked-for sign.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_hooks.atomic_io import atomic_write_bytes

from ..reporting import json_safe, write_report_files
from ..run_folder import read_runs
from ..subliminal.stats import mean_ci, paired_comparison
from .info import fit_decoder, information_test
from .run import Stages
from .stages import items
from .tasks import correct, parse, symbol

ROWS = (("supervised", "supervised", "hits"), ("zero-shot", "zeroshot", "hits"),
        ("blind negated (LoRA × −1)", "blind", "hits_negated"), ("blind as trained", "blind", "hits_trained"),
        ("steered −(B − base)", "steer", "hits"))


class _View:
    def __init__(self, path: Path, config):
        self.path, self.config, self.top = path, config, Stages(path)


def _ci(values) -> dict:
    return mean_ci(values).to_json() if len(values) else {"mean": float("nan"), "n": 0}


def _cmp(a, b, permutations: int) -> dict:
    return paired_comparison(a, b, n_permutations=permutations).to_json()


def collect(path: Path, config) -> dict:
    """Every number of the report, from the stage files present (a partial run gives a partial report)."""
    view = _View(path, config)
    if not view.top.done("base"):
        return {"complete": False}
    perms = config.analysis.permutations
    test, fit = items(view, "test"), items(view, "fit")
    base = view.top.get("base")
    base_hits = [float(correct(i, t)) for i, t in zip(test, base["test"])]
    families = config.tasks.families
    fam_of = np.array([i.family for i in test])
    out = {"complete": True, "base": {"accuracy": _ci(base_hits), "by_family": {
        f: _ci([h for h, g in zip(base_hits, fam_of) if g == f]) for f in families}}, "teachers": {}, "students": {},
        "mechanism": {}}
    seeds = [s for s in range(config.seeds) if Stages(path / f"seed_{s:03d}").done(f"replies_{config.teachers.kinds[0]}")]
    out["seeds_done"] = len(seeds)
    hits: dict[tuple[str, str], list[float]] = {}
    decoder_hits: dict[str, list[float]] = {}
    for kind in config.teachers.kinds:
        acc, fam, sym_a, sym_r, dec, transforms = [], [], {f: [] for f in families}, {f: [] for f in families}, [], {}
        for s in seeds:
            st = Stages(path / f"seed_{s:03d}")
            if not st.done(f"replies_{kind}"):
                continue
            r = st.get(f"replies_{kind}")
            acc += [float(correct(i, t)) for i, t in zip(test, r["test"])]
            fam += [i.family for i in test]
            for i, t in zip(test, r["test"]):
                sym_a[i.family].append(symbol(i.family, parse(i.family, t)))
                sym_r[i.family].append(symbol(i.family, i.right))
            for f in families:
                d = fit_decoder(f, [i for i in fit if i.family == f], [t for i, t in zip(fit, r["fit"]) if i.family == f],
                                [i for i in test if i.family == f], [t for i, t in zip(test, r["test"]) if i.family == f])
                transforms.setdefault(f, []).append(d["transform"])
                dec.append(d["test_hits"])
            for label, stage, key in ROWS:
                name = f"{stage}_{kind}"
                if st.done(name):
                    hits.setdefault((label, kind), []).extend(st.get(name)[key])
            if st.done(f"mechanism_{kind}"):
                out["mechanism"].setdefault(kind, []).append(st.get(f"mechanism_{kind}"))
            if st.done(f"steer_{kind}"):
                out.setdefault("steer_layers", {}).setdefault(kind, []).append(st.get(f"steer_{kind}")["layer"])
        decoder_hits[kind] = [h for block in dec for h in block]
        out["teachers"][kind] = {
            "accuracy": _ci(acc),
            "by_family": {f: _ci([h for h, g in zip(acc, fam) if g == f]) for f in families},
            "mi": {f: information_test(sym_a[f], sym_r[f], permutations=perms, bootstrap=config.analysis.bootstrap)
                   for f in families if sym_a[f]},
            "decoder": {"accuracy": _ci(decoder_hits[kind]), "transforms": transforms}}
    tests = []  # (where, p) for Bonferroni
    for kind, info in out["teachers"].items():
        for f, mi in info["mi"].items():
            tests.append((("mi", kind, f), mi["p_value"]))
        control = decoder_hits.get("wrong-random")
        if kind != "wrong-random" and control is not None and len(decoder_hits[kind]) == len(control):
            info["decoder"]["vs_wrong_random"] = _cmp(decoder_hits["wrong-random"], decoder_hits[kind], perms)
            tests.append((("decoder", kind), info["decoder"]["vs_wrong_random"]["p_value"]))
    base_pooled = base_hits * len(seeds)
    for (label, kind), h in hits.items():
        row = {"accuracy": _ci(h)}
        if len(h) == len(base_pooled):
            row["vs_base"] = _cmp(base_pooled, h, perms)
            tests.append((("student", label, kind, "vs_base"), row["vs_base"]["p_value"]))
        for control in ("wrong-random", "correct"):
            other = hits.get((label, control))
            if control != kind and other is not None and len(other) == len(h):
                row[f"vs_{control}"] = _cmp(other, h, perms)
                tests.append((("student", label, kind, f"vs_{control}"), row[f"vs_{control}"]["p_value"]))
        out["students"].setdefault(label, {})[kind] = row
    m = max(len(tests), 1)
    out["bonferroni_m"] = m
    adjusted = {where: min(1.0, p * m) if np.isfinite(p) else float("nan") for where, p in tests}

    def adjust(where, record):
        record["p_bonferroni"] = adjusted.get(where, float("nan"))

    for kind, info in out["teachers"].items():
        for f, mi in info["mi"].items():
            adjust(("mi", kind, f), mi)
        if "vs_wrong_random" in info["decoder"]:
            adjust(("decoder", kind), info["decoder"]["vs_wrong_random"])
    for label, rows in out["students"].items():
        for kind, row in rows.items():
            for key in ("vs_base", "vs_wrong-random", "vs_correct"):
                if key in row:
                    adjust(("student", label, kind, key), row[key])
    out["verdicts"] = verdicts(out, config.analysis.alpha)
    return out


def _significant(cmp: dict | None, alpha: float, sign: int = 1) -> bool:
    if not cmp:
        return False
    p = cmp.get("p_bonferroni", float("nan"))
    return bool(np.isfinite(p) and p < alpha and sign * cmp["difference"]["mean"] > 0)


def verdicts(out: dict, alpha: float) -> list[str]:
    lines = []
    for kind in ("inverted-learned", "inverted-oracle"):
        info = out["teachers"].get(kind)
        if not info:
            continue
        mi_sig = [f for f, mi in info["mi"].items() if np.isfinite(mi["p_bonferroni"]) and mi["p_bonferroni"] < alpha]
        dec = info["decoder"].get("vs_wrong_random")
        structured = bool(mi_sig) or _significant(dec, alpha)
        lines.append(f"A = {kind}: accuracy {info['accuracy']['mean']:.2f}; MI above the permutation null in "
                     f"{', '.join(mi_sig) or 'no family'}; decoder {info['decoder']['accuracy']['mean']:.2f}"
                     + (f" vs wrong-random {info['decoder']['accuracy']['mean'] - dec['difference']['mean']:.2f}"
                        if dec else "")
                     + f" -> structured wrongness: **{'yes' if structured else 'no'}**")
    for label in out["students"]:
        for kind in ("inverted-learned", "inverted-oracle"):
            row = out["students"][label].get(kind)
            if not row:
                continue
            better_base = _significant(row.get("vs_base"), alpha)
            better_random = _significant(row.get("vs_wrong-random"), alpha)
            lines.append(f"B {label} from {kind}: accuracy {row['accuracy']['mean']:.2f} -> more correct than the "
                         f"base: **{'yes' if better_base else 'no'}**; than the same from wrong-random: "
                         f"**{'yes' if better_random else 'no'}**")
    return lines


def _f(s: dict) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{s['mean']:.2f} [{s.get('low', float('nan')):.2f}, {s.get('high', float('nan')):.2f}]"


def _d(c: dict | None) -> str:
    if not c:
        return "—"
    return f"{c['difference']['mean']:+.2f} (p {c['p_value']:.3g}, adj {c.get('p_bonferroni', float('nan')):.3g})"


def render(out: dict, config, run_info: dict | None = None) -> str:
    if not out.get("complete"):
        return "# Inversion lab\n\nNo results yet (the base model's replies are not computed).\n"
    fams = config.tasks.families
    lines = ["# Inversion lab: does the answer survive negation?", "",
             f"Model {config.model.spec}; {config.seeds} seed(s) ({out['seeds_done']} done); families {', '.join(fams)}; "
             f"{config.tasks.test} test prompts per family; Bonferroni over m = {out['bonferroni_m']} tests, "
             f"alpha {config.analysis.alpha}.", "", "## Verdicts", ""]
    floor = out["bonferroni_m"] / (config.analysis.permutations + 1)
    if floor >= config.analysis.alpha:
        lines += [f"- **No verdict can be yes**: the smallest adjusted p-value is m/(permutations + 1) = {floor:.3g} "
                  f">= alpha; raise [analysis] permutations above {int(out['bonferroni_m'] / config.analysis.alpha)}."]
    lines += [f"- {v}" for v in out["verdicts"]] or ["- (no teacher finished yet)"]
    lines += ["", "## Base model (test accuracy, 95% CI)", "", "| family | accuracy |", "|---|---|"]
    lines += [f"| {f} | {_f(out['base']['by_family'][f])} |" for f in fams]
    lines += [f"| all | {_f(out['base']['accuracy'])} |", "", "## Teachers A", "",
              "| teacher | accuracy | " + " | ".join(f"MI excess {f} (bits, adj p)" for f in fams)
              + " | decoder accuracy | decoder vs wrong-random |", "|---" * (4 + len(fams)) + "|"]
    for kind, info in out["teachers"].items():
        mi = [f"{info['mi'][f]['excess_bits']:+.2f} ({info['mi'][f]['p_bonferroni']:.3g})" if f in info["mi"] else "—"
              for f in fams]
        lines.append(f"| {kind} | {_f(info['accuracy'])} | " + " | ".join(mi)
                     + f" | {_f(info['decoder']['accuracy'])} | {_d(info['decoder'].get('vs_wrong_random'))} |")
    lines += ["", "Decoder transforms chosen on the fit split: " + "; ".join(
        f"{k}: " + ", ".join(f"{f} {'/'.join(v)}" for f, v in info["decoder"]["transforms"].items())
        for k, info in out["teachers"].items()), "", "## Students B (test accuracy on the original question)", "",
        "| regime | teacher A | accuracy | vs base | vs same from wrong-random | vs same from correct |",
        "|---|---|---|---|---|---|"]
    for label, rows in out["students"].items():
        for kind, row in rows.items():
            lines.append(f"| {label} | {kind} | {_f(row['accuracy'])} | {_d(row.get('vs_base'))} | "
                         f"{_d(row.get('vs_wrong-random'))} | {_d(row.get('vs_correct'))} |")
    if out["mechanism"]:
        lines += ["", "## Mechanism (seed means)", "", "| teacher | mean cos(A − base, B − base) | max cos (layer) | "
                  "first layer where A's lens top-1 departs for ≥ half the prompts |", "|---|---|---|---|"]
        for kind, recs in out["mechanism"].items():
            departed = np.mean([r["lens_departed"] for r in recs], axis=0)
            first = next((i for i, v in enumerate(departed) if v >= 0.5), None)
            cos = np.array([[np.nan if c is None else c for c in r.get("cosine", [])] for r in recs], dtype=float)
            cm = np.nanmean(cos, axis=0) if cos.size else np.array([])
            best = f"{np.nanmax(cm):.3f} ({int(np.nanargmax(cm))})" if cm.size and np.isfinite(cm).any() else "—"
            lines.append(f"| {kind} | {np.nanmean(cm) if cm.size else float('nan'):.3f} | {best}"
                         + f" | {first if first is not None else 'none'} |")
    if run_info:
        lines += ["", "## Run", ""] + [f"- {k}: {v}" for k, v in run_info.items()]
    return "\n".join(lines) + "\n"


def write_report(path: Path, config, plots: bool = True, run_info: dict | None = None) -> dict:
    path = Path(path)
    out = collect(path, config)
    runs = read_runs(path)
    info = {"compute wall time": f"{sum(r.get('wall_s', 0) for r in runs):.0f} s over {len(runs)} invocation(s)",
            "run folder": str(path), **(run_info or {})}
    text = render(out, config, info)
    pngs = None
    if plots and out.get("complete"):
        from .plots import render_plots

        pngs = render_plots(path, out)
    write_report_files(path, json_safe(out), text, pngs)
    # the labs' panel and README call it summary.md
    atomic_write_bytes(path / "summary.md", (path / "report.md").read_bytes())
    return out
