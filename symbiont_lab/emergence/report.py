"""``summary.md`` and ``summary.json`` of an emergence run (numbers from :mod:`.analysis`), and its plots.

EI figures are conditional EI (each prompt's own transition matrix, averaged over prompts)
in bits, with 95% basic-bootstrap intervals over prompts; the pooled EI (one matrix over all
prompts) is given beside it with its shuffled-states control.
"""

from __future__ import annotations

from pathlib import Path

from mlx_hooks.atomic_io import atomic_write_bytes

from ..reporting import json_safe, run_section
from ..run_folder import dump_json
from .analysis import LOSS_FALLEN, at_step, summarize
from .config import ARMS, EmergenceConfig
from .ei_grokking import SCALES as GROK_SCALES
from .ei_model import SCALES as MODEL_SCALES
from .prompt_sets import PROMPT_SETS
from .runner import RunFolder

ARM_TITLES = {"grokking": "main arm", "no_weight_decay": "control: no weight decay",
              "large_fraction": "control: large training fraction"}


def _n(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(entry: dict, key: str = "ei_bits") -> str:
    low, high = entry["intervals"][key]
    return f"{entry[key]:.2f} [{low:.2f}, {high:.2f}]"


def _diff(d: dict) -> str:
    return f"{d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _grokking_section(summary: dict) -> list[str]:
    s = summary["settings"]
    lines = ["## Grokking", "",
             f"a + b mod {s['p']}, one-layer transformer (d_model {s['d_model']}, {s['n_heads']} heads, MLP {s['d_mlp']} "
             f"ReLU, no LayerNorm), full-batch AdamW lr {s['lr']:g}, betas (0.9, 0.98).", "",
             "| arm | pairs trained | weight decay | train ≥ 0.99 at step | test then | test ≥ 0.5 | test ≥ 0.99 | "
             "final train / test acc | steps | stopped because |", "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        a = summary["arms"].get(arm)
        if not a:
            continue
        m, c = a["milestones"], summary_arm_config(s, arm)
        final = m["final"] or {}
        lines.append(f"| {ARM_TITLES[arm]} | {c['fraction']:.0%} | {c['wd']:g} | {_n(m['train_99'])} | "
                     f"{_n(m['test_at_train_99'])} | {_n(m['test_50'])} | {_n(m['test_99'])} | "
                     f"{_n(final.get('train_accuracy'))} / {_n(final.get('test_accuracy'))} | {m['steps']} | "
                     f"{a['stop_reason'] or ('unfinished' if not a['finished'] else '')} |")
    lines.append("")
    progress = summary.get("progress_measures")
    if progress and "grokking" in progress:
        p = progress["grokking"]
        records = summary["arms"]["grokking"]["records"]
        lines += [f"### Progress measures of the main arm (key frequencies {p['key_frequencies']})", "",
                  "| step | train loss | test loss | restricted loss (test) | excluded loss (train) | "
                  "Fourier sparsity | weight norm |", "|---|---|---|---|---|---|---|"]
        for row in p["checkpoints"]:
            lines.append(f"| {row['step']} | {row['train_loss']:.3g} | {row['test_loss']:.3g} | "
                         f"{row['restricted_loss']:.3g} | {row['excluded_loss']:.3g} | "
                         f"{_n(at_step(records, row['step'], 'fourier_sparsity'))} | "
                         f"{_n(at_step(records, row['step'], 'weight_norm'), 1)} |")
        lines += ["", f"Restricted loss: test loss with the neurons kept at their mean plus their key-frequency "
                  f"cos/sin(2πk(a+b)/p) components; excluded loss: train loss with those components removed. "
                  f"Fourier sparsity: share of the embedding's Fourier power in its {s['top_frequencies']} strongest "
                  f"frequencies. A loss \"has fallen\" below {LOSS_FALLEN:g} nat.", ""]
    return lines


def summary_arm_config(settings: dict, arm: str) -> dict:
    return {"fraction": settings["large_fraction"] if arm == "large_fraction" else settings["train_fraction"],
            "wd": 0.0 if arm == "no_weight_decay" else settings["weight_decay"]}


def _grok_ei_section(summary: dict) -> list[str]:
    lines = []
    e = summary["settings"]["grok_ei"]
    for arm, data in summary["grok_ei"].items():
        if not data["checkpoints"]:
            continue
        lines += [f"## Effective information across training: {ARM_TITLES[arm]}", "",
                  f"{e['units']} units per scale, 2^{e['units']} = {2 ** e['units']} states, each tried on {e['prompts']} "
                  f"input pairs; output: the predicted residue. Units set to their {e['low_percentile']:g}th / "
                  f"{e['high_percentile']:g}th percentile over all inputs. Fourier: cos/sin(2πka/p) directions of the "
                  f"residual stream after attention for key frequencies {data['key_frequencies'][:max(1, e['units'] // 2)]}. "
                  "Conditional EI, bits [95% interval].", "",
                  "| step | test acc | " + " | ".join(GROK_SCALES) + " | Fourier − neurons | Fourier − random |",
                  "|---|---|" + "---|" * (len(GROK_SCALES) + 2)]
        for row in data["checkpoints"]:
            lines.append(f"| {row['step']} | {_n(row['test_accuracy'])} | "
                         + " | ".join(_ci(row["scales"][n]["conditional"]) for n in GROK_SCALES)
                         + f" | {_diff(row['macro_minus']['neurons'])} | {_diff(row['macro_minus']['random_directions'])} |")
        last, first = data["checkpoints"][-1], data["checkpoints"][0]
        lines += ["", f"Baseline: at step {first['step']} (the initial weights) Fourier − neurons is already "
                  f"{_diff(first['macro_minus']['neurons'])} bits and Fourier − random "
                  f"{_diff(first['macro_minus']['random_directions'])}: the Fourier directions are, from the start, "
                  "directions along which the input varies; what training adds is the change from there.",
                  "", f"Pooled EI at the last checkpoint (step {last['step']}; one matrix over all prompts; shuffled-"
                  "states control in brackets): " + ", ".join(
                      f"{n} {last['scales'][n]['pooled']['ei_bits']:.2f} ({last['scales'][n]['pooled_shuffled']['ei_bits']:.2f})"
                      for n in GROK_SCALES) + ".", ""]
        t = data.get("transition")
        if t:
            lines += [f"Across the transition (step {t['before']}, last with test accuracy < 0.5 → step {t['after']}, "
                      "first at ≥ 0.99), change in conditional EI: " + ", ".join(
                          f"{n} {_diff(t['gain'][n])}" for n in GROK_SCALES) + "; Fourier's gain minus each micro "
                      "scale's: " + ", ".join(f"{n} {_diff(d)}" for n, d in t["macro_gain_minus_micro_gain"].items()) + ".", ""]
        if data.get("verdicts"):
            lines += ["| effect (conditional EI, paired over prompts) | ours, bits [95%] | verdict |", "|---|---|---|"]
            lines += [f"| {v['effect']} | {v['ours']} | **{v['verdict']}** |" for v in data["verdicts"]]
            lines.append("")
    return lines


def _model_section(summary: dict) -> list[str]:
    m = summary.get("model_ei")
    if not m:
        return []
    cfg = summary["settings"]["model_ei"]
    lines = [f"## Effective information on {summary['settings']['model']}: layer {cfg['layer']}", "",
             f"{len(cfg['steering_sets'])} units per scale (2^{len(cfg['steering_sets'])} states), set at the last prompt "
             f"position; output: the top-1 next token; {sum(len(v) for v in PROMPT_SETS.values())} prompts in "
             f"{len(PROMPT_SETS)} sets. Conditional EI, bits [95% interval].", "",
             "| scale | units | all prompts | " + " | ".join(PROMPT_SETS) + " | pooled (shuffled) |",
             "|---|---|---|" + "---|" * (len(PROMPT_SETS) + 1)]
    for name in MODEL_SCALES:
        e = m["scales"][name]
        units = m["units"][name]
        lines.append(f"| {name} | {', '.join(map(str, units['units']))} | {_ci(e['conditional'])} | "
                     + " | ".join(_ci(m["by_set"][name][s]) for s in PROMPT_SETS)
                     + f" | {e['pooled']['ei_bits']:.2f} ({e['pooled_shuffled']['ei_bits']:.2f}) |")
    lines += ["", "| comparison (paired over prompts) | difference, bits | more EI? |", "|---|---|---|"]
    lines += [f"| {k} | {_diff(d)} | **{d['verdict']}** |" for k, d in m["comparisons"].items()]
    lines.append("")
    return lines


def render_markdown(summary: dict, run_info: dict | None = None) -> str:
    lines = ["# Emergence: grokking and effective information", "",
             "Does a network that memorises and then generalises (grokking) pass through a phase transition we can "
             "watch, and do macro-scale units (Fourier features, SAE latents, steering directions) carry more "
             "effective information (Hoel et al. 2013) about what the model does next than micro units (neurons, "
             "residual dimensions)?", ""]
    lines += _grokking_section(summary)
    if summary["verdicts"]:
        lines += ["## Did the published grokking effects reproduce?", "", "| effect | ours | published | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {v['effect']} | {v['ours']} | {v['published']} | **{v['verdict']}** |" for v in summary["verdicts"]]
        lines.append("")
    lines += _grok_ei_section(summary)
    lines += _model_section(summary)
    lines += ["## How EI is measured", "",
              "EI = H(mean row) − mean H(row) of the transition matrix from the 2^n intervention states (uniform) to the "
              "outputs; determinism = log2 n − mean H(row), degeneracy = log2 n − H(mean row). Conditional: per prompt, "
              "then averaged (I(state; output | prompt)); pooled: one matrix over all prompts (only effects that are the "
              "same in every context count); its shuffled-states control permutes the states within each prompt. "
              "Intervals: basic bootstrap over prompts; comparisons resample the same prompts for both scales. Verdict "
              "rules: see symbiont_lab/emergence/analysis.py.", ""]
    lines += run_section(run_info)
    return "\n".join(lines)


def write_report(folder: str | Path, config: EmergenceConfig, run_info: dict | None = None, plots: bool = True) -> dict:
    """Write summary.md, summary.json and (``plots``) ``plots/*.png`` into ``folder``; returns the summary."""
    folder = Path(folder)
    summary = summarize(RunFolder(folder), config)
    if run_info:
        summary["run"] = run_info
    text = render_markdown(summary, run_info)
    if plots and summary["arms"]:
        from .plots import render_plots

        files = render_plots(summary, folder / "plots")
        summary["plots"] = {k: str(Path(v).relative_to(folder)) for k, v in files.items()}
        text += "\n## Plots\n\n" + "\n".join(f"![{k}]({summary['plots'][k]})" for k in files) + "\n"
    atomic_write_bytes(folder / "summary.md", text.encode("utf-8"))
    dump_json(folder / "summary.json", json_safe(summary))
    return summary


__all__ = ["render_markdown", "write_report"]
