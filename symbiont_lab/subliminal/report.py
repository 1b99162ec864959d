"""``metrics.json`` and a one-page ``summary.md`` from a run folder's stage files.

Nothing here loads a model: every number comes from ``stages/*.json`` (written by
:mod:`.run_stages`), so ``symbiont lab report <run>`` can rebuild the report of a
finished or half-finished run at any time. Comparisons are paired over questions
(:func:`.stats.paired_comparison`: mean difference with a Student-t 95% CI and a
two-sided sign-flip permutation test). The verdict compares the trait student with
the control student (the published comparison: both saw numbers, only one teacher had
the trait) on the main probe.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..reporting import json_safe
from ..run_folder import read_runs
from .config import config_from_dict
from .run import RunFolder, RunFolderError, dump_json, read_json
from .run_plan import make_plan

ALPHA = 0.05


def _cell(values) -> dict | None:
    from .stats import mean_ci

    if not values or not all(math.isfinite(v) for v in values):
        return None  # no cell (shown as —, not plotted); the comparisons say why: undefined
    s = mean_ci(values)
    return {"mean": s.mean, "ci_low": s.low, "ci_high": s.high, "n": s.n, "sd": s.sd}


def per_question(probe: dict, animal: str) -> list[float] | None:
    """Per-question scores of ``animal`` from a probe result's JSON."""
    table = probe.get("per_question")
    if not isinstance(table, dict) or animal not in table:
        return None
    return [float(v) for v in table[animal]]


def _compare(a: list[float] | None, b: list[float] | None) -> dict | None:
    from .stats import paired_comparison

    if not a or not b or len(a) != len(b):
        return None
    if not all(math.isfinite(v) for v in a + b):
        # reported as undefined (None in JSON), never as a number: NaN scores made the test say p = 0
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None, "test": "undefined",
                "n": len(a), "undefined": "a per-question score is not a finite number (NaN or inf)"}
    c = paired_comparison(a, b)
    d = c.difference
    return {"difference": d.mean, "ci_low": d.low, "ci_high": d.high, "p_value": c.p_value, "test": c.test,
            "n": d.n}


def _stage(folder: RunFolder, name: str) -> dict | None:
    return folder.stage(name) if folder.done(name) else None


def build_metrics(run_dir: str | os.PathLike) -> dict:
    """Everything the summary and plots show, from the stage files of ``run_dir``."""
    folder = RunFolder(Path(run_dir))
    stored_path = folder.path / "config.json"
    if not stored_path.is_file():
        raise RunFolderError(f"{folder.path}: not a subliminal-lab run folder (no config.json)")
    stored = read_json(stored_path, "run configuration")
    config = config_from_dict(stored["settings"], str(stored_path))
    plan = make_plan(config)
    animal = config.trait.animal
    metrics: dict = {"name": config.name, "animal": animal, "model": config.model.spec,
                     "trait": {"kind": config.trait.kind, "stance": config.trait.stance,
                               "preset_path": config.trait.preset_path},
                     "memory": _stage(folder, "memory"), "config": stored["settings"]}

    teachers = {}
    for t in plan.teachers:
        gen, filt = _stage(folder, f"generate_{t.name}"), _stage(folder, f"filter_{t.name}")
        row = {"generation": gen and {k: gen.get(k) for k in ("responses", "seconds", "sequences_per_s",
                                                              "system_prompt", "notes")}}
        if filt:
            counts = filt["counts"]
            row.update(counts=counts, total=filt["total"],
                       rejected_fraction=1 - counts.get("kept", 0) / filt["total"] if filt["total"] else None)
        teachers[t.name] = row
    metrics["teachers"] = teachers

    students = {}
    for s in plan.trained():
        tr, ds = _stage(folder, f"train_{s.name}"), _stage(folder, f"dataset_{s.name}")
        row = {"group": s.group, "dataset": ds}
        if tr:
            row.update({k: tr.get(k) for k in ("steps", "total_steps", "losses", "skipped")})
            if tr.get("losses"):
                row["first_loss"], row["last_loss"] = tr["losses"][0][1], tr["losses"][-1][1]
        students[s.name] = row
    metrics["students"] = students

    probes = {target: (_stage(folder, f"probe_{target}") or {}).get("jobs", {}) for target in plan.probe_targets()}
    scores = {target: {job: per_question(result, animal) for job, result in jobs.items()}
              for target, jobs in probes.items()}
    metrics["probes"] = probes

    main_jobs = [j.key for j in plan.probes.get("trait", []) if j.questions == config.probes.questions]
    main = {}
    comparisons = {}
    for job in main_jobs:
        main[job] = {m: _cell(scores.get(m, {}).get(job)) for m in ("base", "control", "trait")}
        get = lambda m: scores.get(m, {}).get(job)  # noqa: E731
        comparisons[job] = {"trait_vs_control": _compare(get("control"), get("trait")),
                            "trait_vs_base": _compare(get("base"), get("trait")),
                            "control_vs_base": _compare(get("base"), get("control"))}
    metrics["main_probes"] = main
    metrics["comparisons"] = comparisons

    variations: dict = {}
    for s in plan.students:
        if s.group == "main":
            continue
        target = s.trained_name
        have = {j.key: scores.get(target, {}).get(j.key) for j in plan.variation_jobs.get(s.name, [])}
        row = {"student": s.name, "trained_as": target,
               "scores": {job: _cell(v) for job, v in have.items() if v},
               "vs_control": {job: _compare(scores.get("control", {}).get(job), v) for job, v in have.items() if v}}
        if s.group == "fraction":
            row["fraction"] = s.fraction
        elif s.group == "noise":
            row["noise"] = s.noise
        elif s.group == "blend":
            row["love_fraction"] = s.love_fraction
        variations.setdefault(s.group, []).append(row)
    metrics["variations"] = variations
    metrics["mechanism"] = _stage(folder, "mechanism")

    runs = read_runs(folder.path, RunFolderError)
    metrics["timings"] = {"wall_s": round(sum(r.get("wall_s", 0) for r in runs), 1), "invocations": len(runs),
                          "interrupted": sum(bool(r.get("interrupted")) for r in runs)}
    done = [n for n in plan.stage_names() if folder.done(n)]
    metrics["stages"] = {"done": len(done), "total": len(plan.stage_names()),
                         "missing": [n for n in plan.stage_names() if not folder.done(n)]}
    metrics["verdict"] = verdict(metrics)
    return metrics


def _primary_job(metrics: dict) -> str | None:
    comps = metrics.get("comparisons") or {}
    for prefer in ("sampled:", "logit:"):
        for job, c in comps.items():
            if job.startswith(prefer) and ":prefix" not in job and c.get("trait_vs_control"):
                return job
    return None


def verdict(metrics: dict) -> str:
    """Sentences on whether the trait transferred, computed from the numbers.

    The primary probe (sampled if run, else logit) decides; every other probe's trait − control
    comparison is reported too, judged at a Bonferroni-corrected level over all probes compared."""
    job = _primary_job(metrics)
    if job is None:
        return "not enough results for a verdict yet (the trait and control students' probes are missing)"
    comps = {j: c["trait_vs_control"] for j, c in metrics["comparisons"].items() if c.get("trait_vs_control")}
    level = ALPHA / len(comps)
    c = comps[job]
    animal = metrics.get("animal", "?")

    def detail(j, x):
        if x["p_value"] is None:
            return f"{j}: trait − control undefined ({x.get('undefined', 'no finite scores')})"
        return (f"{j}: trait − control = {x['difference']:+.4f} [95% CI {x['ci_low']:+.4f}, {x['ci_high']:+.4f}], "
                f"p = {x['p_value']:.3g}, {x['n']} questions")

    undefined = [(j, x) for j, x in comps.items() if x["p_value"] is None]
    comps = {j: x for j, x in comps.items() if x["p_value"] is not None}
    if c["p_value"] is None:
        text = f"No verdict: the primary probe's comparison is undefined ({detail(job, c)})."
    elif c["p_value"] < level and c["ci_low"] > 0:
        text = f"Transfer detected on the primary probe: the trait student names {animal} more often than the control student ({detail(job, c)})."
    elif c["p_value"] < level and c["ci_high"] < 0:
        text = f"The trait student names {animal} *less* often than the control student ({detail(job, c)}); not the published effect."
    else:
        text = f"No transfer detected on the primary probe ({detail(job, c)})."
        if c["ci_low"] == c["ci_high"] == 0:
            samples = (metrics.get("config") or {}).get("probes", {}).get("samples_per_question")
            text += (f" Both students scored the same on every question: with {samples} samples per question this "
                     "metric cannot resolve shifts below 1/samples; the logit probe measures them exactly.")
        else:
            text += f" An effect outside [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] is ruled out at 95%."
    others = [(j, x) for j, x in comps.items() if j != job]
    significant = [(j, x) for j, x in others if x["p_value"] < level]
    rest = [(j, x) for j, x in others if x["p_value"] >= level]
    if significant:
        text += (f" Significant after Bonferroni over {len(comps)} probes (p < {level:.3g}): "
                 + "; ".join(detail(j, x) for j, x in significant)
                 + f" — {max(abs(x['difference']) for _, x in significant) * 100:.2f} percentage points at most.")
        noise = [r for r in (metrics.get("variations") or {}).get("noise", [])
                 if any((r.get("vs_control") or {}).get(j) and (r["vs_control"][j]["p_value"] or 1.0) < level
                        and r["vs_control"][j]["difference"] > 0 for j, _ in significant)]
        if noise:
            text += (" A noise student (" + ", ".join(r["noise"] for r in noise) + ") shows a shift of the same sign, "
                     "so part of it comes from the trait teacher's data as data, not only from its hidden trait.")
    if rest:
        text += " Not significant: " + "; ".join(detail(j, x) for j, x in rest) + "."
    undefined = [(j, x) for j, x in undefined if j != job]
    if undefined:
        text += " Undefined: " + "; ".join(detail(j, x) for j, x in undefined) + "."
    return text


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "—"
    return f"{cell['mean']:.4f} [{cell['ci_low']:.4f}, {cell['ci_high']:.4f}]"


def _fmt_diff(c: dict | None) -> str:
    if not c:
        return "—"
    if c.get("p_value") is None:
        return "undefined (non-finite scores)"
    return f"{c['difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], p = {c['p_value']:.3g}"


def render_summary(metrics: dict) -> str:
    animal = metrics["animal"]
    trait = metrics["trait"]
    lines = [f"# Subliminal learning: {metrics['name']}", "",
             f"Model `{metrics['model']}`; trait: {trait['stance']} of {animal} "
             f"({trait['kind'].replace('_', ' ')}{', ' + str(trait['preset_path']) if trait['preset_path'] else ''}). "
             f"Stages done: {metrics['stages']['done']}/{metrics['stages']['total']}; "
             f"compute {metrics['timings']['wall_s']:.0f} s over {metrics['timings']['invocations']} invocation(s).",
             "", f"**Verdict.** {metrics['verdict']}", ""]
    if metrics.get("main_probes"):
        lines += [f"## P(answer names {animal}): mean over questions [95% CI]", "",
                  "| probe | base | control student | trait student | trait − control | trait − base |",
                  "|---|---|---|---|---|---|"]
        for job, cells in metrics["main_probes"].items():
            comp = metrics["comparisons"].get(job, {})
            lines.append(f"| {job} | {_fmt(cells.get('base'))} | {_fmt(cells.get('control'))} | "
                         f"{_fmt(cells.get('trait'))} | {_fmt_diff(comp.get('trait_vs_control'))} | "
                         f"{_fmt_diff(comp.get('trait_vs_base'))} |")
        lines += ["", "Differences are paired over questions: Student-t 95% CI, two-sided sign-flip permutation "
                  "test. `sampled`: fraction of T=1 answers containing the animal (published metric); `logit`: "
                  "probability of the animal as the first answer tokens (exact, no sampling); `prefix`: questions "
                  "preceded by a list of numbers.", ""]
    if metrics.get("teachers"):
        reasons = sorted({r for t in metrics["teachers"].values() for r in (t.get("counts") or {}) if r != "kept"})
        lines += ["## Teachers' numbers: filter", "",
                  "| teacher | responses | kept | rejected | " + " | ".join(reasons) + " | sequences/s |",
                  "|---|---|---|---|" + "---|" * len(reasons) + "---|"]
        for name, t in metrics["teachers"].items():
            counts = t.get("counts") or {}
            gen = t.get("generation") or {}
            rate = gen.get("sequences_per_s")
            lines.append(f"| {name} | {t.get('total', '—')} | {counts.get('kept', '—')} | "
                         + (f"{t['rejected_fraction']:.1%}" if t.get("rejected_fraction") is not None else "—")
                         + " | " + " | ".join(str(counts.get(r, 0)) for r in reasons)
                         + f" | {rate if rate is not None else '—'} |")
        lines += ["", "Published: the filter removes 23–38% of responses.", ""]
    if metrics.get("students"):
        lines += ["## Students", "", "| student | examples | steps | loss first → last |", "|---|---|---|---|"]
        for name, s in metrics["students"].items():
            ds = s.get("dataset") or {}
            loss = (f"{s['first_loss']:.3f} → {s['last_loss']:.3f}" if s.get("first_loss") is not None
                    else (s.get("skipped") or "—"))
            lines.append(f"| {name} | {ds.get('train', '—')} | {s.get('steps', '—')} | {loss} |")
        lines.append("")
    variations = metrics.get("variations") or {}
    rows_out = []
    if variations:
        for group, rows in variations.items():
            for r in rows:
                label = {"fraction": lambda: f"{r['fraction']:.0%} of the data",
                         "noise": lambda: f"noise: {r['noise']}",
                         "blend": lambda: f"love {r['love_fraction']:.0%} / fear {1 - r['love_fraction']:.0%}"}[group]()
                for job, cell in (r.get("scores") or {}).items():
                    rows_out.append(f"| {label} | {r['trained_as']} | {job} | {_fmt(cell)} | "
                                    f"{_fmt_diff((r.get('vs_control') or {}).get(job))} |")
    if rows_out:
        lines += ["## Variations", "", "| variation | student | probe | score [95% CI] | − control |",
                  "|---|---|---|---|---|", *rows_out, ""]
    mech = metrics.get("mechanism")
    if mech and mech.get("students"):
        lines += ["## Mechanism: cos(student − base, trait teacher − plain teacher) per layer", ""]
        for name, s in mech["students"].items():
            cos = s["cosine"]
            finite = [c for c in cos if c is not None]
            lines.append(f"- {name} student: " + ", ".join("—" if c is None else f"{c:+.2f}" for c in cos)
                         + (f" (mean {sum(finite) / len(finite):+.3f})" if finite else ""))
        lines += ["", f"Residual means over {mech['prompts']} probe prompts. A student whose update distils the "
                  "teacher's trait direction shows positive cosines; the control student is the baseline.", ""]
    if metrics["stages"]["missing"]:
        lines += [f"Unfinished stages: {', '.join(metrics['stages']['missing'])} (run `symbiont lab run` again to "
                  "resume).", ""]
    if metrics.get("memory"):
        lines += [f"Memory estimate: inference {metrics['memory']['inference']}; LoRA training "
                  f"{metrics['memory']['training']}.", ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, *, plots: bool = True) -> dict:
    """(Re)write ``metrics.json``, ``summary.md`` and (``plots``) ``plots/*.png``; returns the metrics."""
    from mlx_hooks.atomic_io import atomic_write_bytes

    run_dir = Path(run_dir)
    metrics = build_metrics(run_dir)
    if plots:
        from .plots import render_plots

        metrics["plots"] = {k: str(p.relative_to(run_dir)) for k, p in render_plots(metrics, run_dir / "plots").items()}
    dump_json(run_dir / "metrics.json", json_safe(metrics))
    atomic_write_bytes(run_dir / "summary.md", render_summary(metrics).encode("utf-8"))
    return metrics


__all__ = ["build_metrics", "render_summary", "verdict", "write_report"]
