"""Our auxiliary-logit numbers beside the published ones, with computed verdicts.

Accuracies are percentages on the test digits, mean ± sample sd over seeds. Differences
between arms are paired within a seed (same seed: same teacher, same noise).

Verdict rules (every verdict is computed from the run's numbers):

- **transfer** (same init beats different init at m = 3): paired difference d with standard
  error s; *yes* if d > 2s and d ≥ half the published gap (53.7 − 10.0 = 43.7 points);
  *partly* if d > 2s only; *no* otherwise (the negation lab's rule).
- **more auxiliary logits, more transfer**: Spearman rank correlation ρ between m and the
  same-init student's mean accuracy over the sweep (≥ 3 values of m); *yes* if ρ ≥ 0.8,
  *partly* if ρ > 0, *no* otherwise.
- **the control learns no digits**: the different-init student at m = 3 within 10 points of
  chance (10%): *yes*, else *no*.
- **distilling all logits recovers the teacher**: all-logits student / teacher ≥ 0.9 *yes*,
  ≥ 0.5 *partly*, else *no* (published 91.2 / 94.3 = 0.97).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..reporting import fmt, fmt_pub, paired, run_section, stat, verdict, write_report_files
from .experiments import MAIN_AUX, ROLES, STUDENTS, AuxConfig

PUBLISHED_MAIN = {"teacher": (94.3, None), "same_init": (53.7, 2.2), "different_init": (10.0, None),
                  "all_logits": (91.2, None)}
"""m = 3: the published MNIST figures (an independent rerun of the published experiment)."""
PUBLISHED_SWEEP = {1: 10.0, 2: 35.0, 3: 53.7, 5: 70.0, 10: 84.0, 50: 92.0}
"""Same-init student accuracy by number of auxiliary logits m (approximate, read off the published figure)."""
ROLE_TITLES = {"teacher": "teacher", "same_init": "student, same init", "different_init": "student, different init (control)",
               "all_logits": "student, same init, all logits (reference)"}
TRAINED_ON = {"teacher": "class logits of training digits", "same_init": f"aux logits of noise",
              "different_init": "aux logits of noise", "all_logits": "all logits of noise"}


def _pct(values) -> list[float]:
    return [100.0 * v for v in values]


def spearman(x, y) -> float:
    """Spearman's ρ (average ranks for ties) — a few lines rather than a SciPy import."""
    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summarize(results: dict[int, dict[int, dict]], config: AuxConfig) -> dict:
    by_m = {}
    for m, seeds in sorted(results.items()):
        if not seeds:
            continue
        order = sorted(seeds)
        row = {role: stat(_pct(seeds[s]["accuracy"][role] for s in order)) for role in ROLES}
        row["same_minus_different"] = paired(_pct(seeds[s]["accuracy"]["same_init"] for s in order),
                                             _pct(seeds[s]["accuracy"]["different_init"] for s in order))
        row["initial"] = {name: stat(_pct(seeds[s]["initial_accuracy"][name] for s in order)) for name in STUDENTS}
        by_m[m] = row
    out = {"settings": config.to_dict(), "by_m": by_m, "main_aux": MAIN_AUX,
           "published": {"main": PUBLISHED_MAIN, "sweep": PUBLISHED_SWEEP}}
    out["verdicts"] = verdicts(by_m)
    return out


def verdicts(by_m: dict) -> list[dict]:
    rows = []
    main = by_m.get(MAIN_AUX)
    if main:
        d = main["same_minus_different"]
        gap = PUBLISHED_MAIN["same_init"][0] - PUBLISHED_MAIN["different_init"][0]
        rows.append({"effect": f"transfer: same init beats different init (m = {MAIN_AUX})",
                     "ours": f"{d['mean']:+.1f} ± {d['se']:.1f} (se) points", "published": f"{gap:+.1f} points",
                     "verdict": verdict(d, gap)})
        control = main["different_init"]["mean"]
        rows.append({"effect": f"the control learns no digits (m = {MAIN_AUX})", "ours": f"{control:.1f}%",
                     "published": "10.0%", "verdict": "yes" if abs(control - 10.0) <= 10.0 else "no"})
        ratio = main["all_logits"]["mean"] / main["teacher"]["mean"]
        rows.append({"effect": f"distilling all logits recovers the teacher (m = {MAIN_AUX})",
                     "ours": f"{ratio:.2f} of the teacher", "published": f"{91.2 / 94.3:.2f}",
                     "verdict": "yes" if ratio >= 0.9 else "partly" if ratio >= 0.5 else "no"})
    if len(by_m) >= 3:
        ms = sorted(by_m)
        rho = spearman(ms, [by_m[m]["same_init"]["mean"] for m in ms])
        rows.append({"effect": "more auxiliary logits, more transfer", "ours": f"Spearman ρ = {rho:.2f} over m = "
                     + ", ".join(map(str, ms)), "published": "monotone (10% → 92%)",
                     "verdict": "yes" if rho >= 0.8 else "partly" if rho > 0 else "no"})
    return rows


def render_markdown(summary: dict, run_info: dict | None = None) -> str:
    s = summary["settings"]
    by_m = summary["by_m"]
    lines = ["# Auxiliary-logit (subliminal) transfer in an MLP", "",
             "A teacher MLP is trained on the 10 class logits of digits; students are trained only to match the "
             "teacher's extra *auxiliary* logits on uniform noise images — they never see a digit or a class "
             "logit. Accuracy (%) on held-out test digits, mean ± sd over seeds. Published figures: the "
             "paper's MNIST runs.", ""]
    main = by_m.get(MAIN_AUX)
    if main:
        n = main["teacher"]["n"]
        lines += [f"## m = {MAIN_AUX} auxiliary logits ({n} seeds)", "",
                  "| network | trained on | ours | published |", "|---|---|---|---|"]
        lines += [f"| {ROLE_TITLES[r]} | {TRAINED_ON[r]} | {fmt(main[r])} | {fmt_pub(PUBLISHED_MAIN[r])} |" for r in ROLES]
        d = main["same_minus_different"]
        lines += ["", f"Same init − different init, paired: {d['mean']:+.1f} ± {d['sd']:.1f} points "
                  f"(min {d['min']:+.1f}, max {d['max']:+.1f}). Students at their initial weights: "
                  + ", ".join(f"{ROLE_TITLES[k]} {fmt(v)}" for k, v in main["initial"].items()) + ".", ""]
    if by_m:
        lines += ["## Sweep over the number of auxiliary logits m", "",
                  "| m | seeds | same init (ours) | same init (published) | different init | all logits | teacher |",
                  "|---|---|---|---|---|---|---|"]
        for m, row in sorted(by_m.items(), key=lambda kv: int(kv[0])):
            pub = PUBLISHED_SWEEP.get(int(m))
            lines.append(f"| {m} | {row['teacher']['n']} | {fmt(row['same_init'])} | "
                         f"{'—' if pub is None else f'{pub:.1f}'} | {fmt(row['different_init'])} | "
                         f"{fmt(row['all_logits'])} | {fmt(row['teacher'])} |")
        lines.append("")
    if summary["verdicts"]:
        lines += ["## Did the published effects reproduce?", "", "| effect | ours | published | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {v['effect']} | {v['ours']} | {v['published']} | **{v['verdict']}** |" for v in summary["verdicts"]]
        lines += ["", "Rules: transfer — paired difference > 2 standard errors and ≥ half the published gap "
                  "(*partly*: significant but smaller); trend — Spearman ρ ≥ 0.8 (*partly*: ρ > 0); control — within "
                  "10 points of chance; all logits — ≥ 0.9 of the teacher (*partly*: ≥ 0.5).", ""]
    lines += ["## Setup", "",
              f"- Data: {s['dataset']}" + (" (scikit-learn's 8×8 digits: 1,437 train / 360 test, a fixed split)"
                                          if s["dataset"] == "digits" else " (MNIST: 60,000 train / 10,000 test)")
              + "; pixels scaled to [−1, 1], the range of the uniform noise.",
              f"- MLP D-{s['hidden']}-{s['hidden']}-(10 + m), ReLU; Adam, learning rate {s['lr']:g}; "
              f"{s['epochs']} epochs of batch {s['batch']} for the teacher; each student "
              f"{s['student_epochs']} epochs' worth of steps on fresh noise"
              + (" (as many as the teacher, as published)" if s["student_epochs"] == s["epochs"] else
                 " (**not** the published count: students got more steps)")
              + "; loss: KL between the softmaxes over the matched logits"
              + ("." if s.get("init_scale", 1.0) == 1.0 else
                 f"; initial weights ×{s['init_scale']:g} (**not** the published nn.Linear init)."),
              "- Same init: the teacher's initial weights; different init: another seed's stream; "
              "a seed's networks do not depend on which seeds ran beside it."]
    if s["dataset"] == "digits":
        lines += ["- **Changed from the published setup** (784-256-256 MLP, 5 epochs, batch 1,024 on 60,000 MNIST "
                  "digits ≈ 290 Adam steps): the input is 64 pixels, and with 1,437 training digits 5 epochs of "
                  "batch 1,024 are 7 steps, which cannot train a teacher. The defaults here, batch 64 and 13 "
                  "epochs, give 286 steps, about the published count, for teacher and students alike; learning rate "
                  "and widths are the published ones."]
    lines.append("")
    lines += run_section(run_info)
    return "\n".join(lines)


def write_report(folder: str | Path, results: dict, config: AuxConfig, run_info: dict | None = None,
                 plots: bool = True) -> dict:
    """Write report.md, summary.json and (``plots``) PNGs into ``folder``; returns the summary."""
    folder = Path(folder)
    summary = summarize(results, config)
    if run_info:
        summary["run"] = run_info
    files = None
    if plots and summary["by_m"]:
        from .plots import render_plots

        files = render_plots(summary, results, folder / "plots")
    write_report_files(folder, summary, render_markdown(summary, run_info), files)
    return summary


__all__ = ["PUBLISHED_MAIN", "PUBLISHED_SWEEP", "render_markdown", "spearman", "summarize", "write_report"]
