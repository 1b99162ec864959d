"""The numbers of an emergence run, computed from its folder: grokking milestones, progress
measures, EI with intervals and contrasts, and the verdicts (every one computed from them).

Verdict rules:

- **grokking** (main arm): train accuracy reaches 0.99 at step t_train while test accuracy is
  still below 0.5, and test accuracy reaches 0.99 at t_test ≥ 3·t_train: *yes*; test reaches
  0.99 but sooner or without the gap: *partly*; never: *no*.
- **no weight decay, no jump**: the no-weight-decay arm's test accuracy stays below 0.9 over a
  budget at least 1.5× the main arm's t_test: *yes*; it reaches 0.99 later than the main arm:
  *partly*; as soon or sooner: *no*.
- **large training fraction, no delay**: that arm's t_test − t_train is at most a third of the
  main arm's: *yes*; smaller but not that small: *partly*; else *no*.
- **the circuit forms before test loss falls** (Nanda et al.): the first checkpoint where the
  restricted loss is below 1 nat comes before the first where the test loss is: *yes*; the
  same checkpoint: *partly*; later or never: *no*.
- **EI comparisons** (conditional EI, bits, paired over the same prompts): the 95% interval
  of the difference above 0: *yes*; below 0: *no — the other scale has more*; else *no
  detectable difference*.
"""

from __future__ import annotations

import numpy as np

from mlx_hooks.effective_information import bootstrap_contrast, bootstrap_ei, one_hot_outputs, shuffle_states

from .config import ARMS, EI_ARMS, EmergenceConfig
from .ei_grokking import MACRO as GROK_MACRO
from .ei_grokking import MICRO as GROK_MICRO
from .ei_grokking import SCALES as GROK_SCALES
from .ei_model import CONTROL_OF, MACRO, MICRO
from .ei_model import SCALES as MODEL_SCALES
from .grokking import read_state
from .prompt_sets import PROMPT_SETS
from .runner import RunFolder, ei_steps

LOSS_FALLEN = 1.0
"""Nats: a loss "has fallen" below this (chance is ln p ≈ 4.1 for p = 59)."""


def first_step(records: list, key: str, threshold: float, below: bool = False) -> int | None:
    for r in records:
        value = r.get(key)
        if value is not None and (value < threshold if below else value >= threshold):
            return int(r["step"])
    return None


def at_step(records: list, step: int, key: str) -> float | None:
    """``key`` of the last record at or before ``step`` (records are every eval_every steps)."""
    found = None
    for r in records:
        if r["step"] > step:
            break
        found = r.get(key)
    return found


def _step(step: int | None) -> str:
    return "never" if step is None else str(step)


def _acc(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def arm_milestones(records: list) -> dict:
    t_train = first_step(records, "train_accuracy", 0.99)
    return {"train_99": t_train, "test_50": first_step(records, "test_accuracy", 0.5),
            "test_99": first_step(records, "test_accuracy", 0.99),
            "test_at_train_99": at_step(records, t_train, "test_accuracy") if t_train is not None else None,
            "final": records[-1] if records else None, "steps": records[-1]["step"] if records else 0}


def _samples(choices) -> np.ndarray:
    return one_hot_outputs(np.asarray(choices))[0]


def ei_entry(choices, n_boot: int) -> dict:
    """Conditional and pooled EI of stored outputs, with intervals, and the pooled shuffled-states control."""
    s = _samples(choices)
    return {"conditional": bootstrap_ei(s, n_boot).to_dict(),
            "pooled": bootstrap_ei(s, n_boot, pooling="pooled").to_dict(),
            "pooled_shuffled": bootstrap_ei(shuffle_states(s), n_boot, pooling="pooled").to_dict()}


def comparison(verdict_of: str, a, b, n_boot: int) -> dict:
    d = bootstrap_contrast([_samples(a), _samples(b)], [1, -1], n_boot)
    d["verdict"] = _sign_verdict(d, verdict_of)
    return d


def grok_ei_summary(folder: RunFolder, arm: str, records: list, config: EmergenceConfig) -> dict:
    results = folder.grok_ei(arm)
    if results:  # only what was measured with the arm's final key frequencies
        final = results[max(results)]["key_frequencies"]
        results = {s: r for s, r in results.items() if r["key_frequencies"] == final}
    steps = sorted(results)
    rows = []
    for step in steps:
        scales = results[step]["scales"]
        row = {"step": step, "test_accuracy": at_step(records, step, "test_accuracy"),
               "scales": {name: ei_entry(scales[name]["choices"], config.n_boot) for name in GROK_SCALES}}
        row["macro_minus"] = {other: comparison(other, scales[GROK_MACRO]["choices"], scales[other]["choices"],
                                                config.n_boot) for other in (*GROK_MICRO, "random_directions")}
        rows.append(row)
    out = {"checkpoints": rows, "key_frequencies": results[steps[-1]]["key_frequencies"] if steps else []}
    # the transition: the last checkpoint with test accuracy < 0.5 and the first at ≥ 0.99 after it
    pre = [s for s in steps if (at_step(records, s, "test_accuracy") or 0) < 0.5]
    post = [s for s in steps if pre and s > pre[-1] and (at_step(records, s, "test_accuracy") or 0) >= 0.99]
    if pre and post:
        before, after = results[pre[-1]]["scales"], results[post[0]]["scales"]
        gains = {name: bootstrap_contrast([_samples(after[name]["choices"]), _samples(before[name]["choices"])],
                                          [1, -1], config.n_boot) for name in GROK_SCALES}
        more = {m: bootstrap_contrast([_samples(after[GROK_MACRO]["choices"]), _samples(before[GROK_MACRO]["choices"]),
                                       _samples(after[m]["choices"]), _samples(before[m]["choices"])],
                                      [1, -1, -1, 1], config.n_boot) for m in GROK_MICRO}
        out["transition"] = {"before": pre[-1], "after": post[0], "gain": gains, "macro_gain_minus_micro_gain": more}
    out["verdicts"] = grok_ei_verdicts(out)
    return out


def _sign_verdict(d: dict, other: str = "") -> str:
    return "yes" if d["low"] > 0 else (f"no — {other} has more" if other else "no — it fell") if d["high"] < 0 \
        else "no detectable difference"


def grok_ei_verdicts(data: dict) -> list[dict]:
    """Macro (Fourier) against micro and random at the last checkpoint, and across the transition."""
    rows = []
    if data["checkpoints"]:
        last = data["checkpoints"][-1]
        for other, d in last["macro_minus"].items():
            rows.append({"effect": f"Fourier features carry more EI than {other} (step {last['step']})",
                         "ours": f"{d['value']:+.2f} bits [{d['low']:+.2f}, {d['high']:+.2f}]",
                         "verdict": _sign_verdict(d, other)})
    t = data.get("transition")
    if t:
        g = t["gain"][GROK_MACRO]
        rows.append({"effect": f"Fourier EI rises across the transition (step {t['before']} → {t['after']})",
                     "ours": f"{g['value']:+.2f} bits [{g['low']:+.2f}, {g['high']:+.2f}]", "verdict": _sign_verdict(g)})
        for other, d in t["macro_gain_minus_micro_gain"].items():
            rows.append({"effect": f"... by more than the EI of {other}",
                         "ours": f"{d['value']:+.2f} bits [{d['low']:+.2f}, {d['high']:+.2f}]",
                         "verdict": _sign_verdict(d, f"{other}'s gain")})
    return rows


def model_ei_summary(folder: RunFolder, config: EmergenceConfig) -> dict | None:
    units, done = folder.model_ei()
    if units is None or set(done) != set(MODEL_SCALES):
        return None
    labels = np.array([name for name, texts in PROMPT_SETS.items() for _ in texts])
    out = {"units": {k: {key: v for key, v in info.items() if key != "vectors"} for k, info in units.items()},
           "scales": {}, "by_set": {}, "comparisons": {}}
    for name in MODEL_SCALES:
        choices = np.asarray(done[name]["choices"])
        out["scales"][name] = ei_entry(choices, config.n_boot)
        out["by_set"][name] = {s: bootstrap_ei(_samples(choices[labels == s]), config.n_boot).to_dict()
                               for s in PROMPT_SETS}
    for macro in MACRO:
        for other in (*MICRO, CONTROL_OF[macro]):
            out["comparisons"][f"{macro} − {other}"] = comparison(other, done[macro]["choices"], done[other]["choices"],
                                                                  config.n_boot)
    return out


def grokking_verdicts(arms: dict, progress: dict | None) -> list[dict]:
    rows = []
    main = arms.get("grokking")
    if not main:
        return rows
    m = main["milestones"]
    t_train, t_test = m["train_99"], m["test_99"]
    gap = t_test is not None and t_train is not None and (m["test_at_train_99"] or 0) < 0.5 and t_test >= 3 * t_train
    rows.append({"effect": "train accuracy saturates early, test accuracy jumps much later",
                 "ours": f"train ≥ 0.99 at step {_step(t_train)} (test accuracy then {_acc(m['test_at_train_99'])}); "
                         f"test ≥ 0.99 at step {_step(t_test)}",
                 "published": "test jumps 10³–10⁵ steps after train saturates",
                 "verdict": "yes" if gap else "partly" if t_test is not None else "no"})
    no_jump = "n/a (the main arm did not reach test accuracy 0.99: nothing to compare with)"
    nowd = arms.get("no_weight_decay")
    if nowd:
        n = nowd["milestones"]
        final = n["final"]["test_accuracy"] if n["final"] else float("nan")
        ours = f"test accuracy {final:.3f} after {n['steps']} steps" + (
            f" (reached 0.99 at {n['test_99']})" if n["test_99"] is not None else "")
        if t_test is None:
            verdict = no_jump
        else:
            long_enough = n["steps"] >= 1.5 * t_test
            verdict = ("yes" if final < 0.9 and n["test_99"] is None and long_enough
                       else "partly" if n["test_99"] is None or n["test_99"] > t_test else "no")
        rows.append({"effect": "without weight decay the jump does not come", "ours": ours,
                     "published": "weight decay matters most (Power et al.)", "verdict": verdict})
    large = arms.get("large_fraction")
    if large:
        g = large["milestones"]
        delay = (g["test_99"] - g["train_99"]) if g["test_99"] is not None and g["train_99"] is not None else None
        main_delay = t_test - t_train if t_test is not None and t_train is not None else None
        ours = (f"delay {delay} steps" if delay is not None else "test never reached 0.99") + (
            f" (main arm {main_delay})" if main_delay is not None else "")
        verdict = (no_jump if main_delay is None else "yes" if delay is not None and delay <= main_delay / 3
                   else "partly" if delay is not None and delay < main_delay else "no")
        rows.append({"effect": "with a large training fraction the delay disappears", "ours": ours,
                     "published": "more data, earlier generalisation (Power et al.)", "verdict": verdict})
    if progress and "grokking" in progress:
        points = progress["grokking"]["checkpoints"]
        restricted = first_step(points, "restricted_loss", LOSS_FALLEN, below=True)
        test = first_step(points, "test_loss", LOSS_FALLEN, below=True)
        rows.append({"effect": "the Fourier circuit forms before test loss falls (restricted loss first)",
                     "ours": f"restricted loss < {LOSS_FALLEN:g} at step {_step(restricted)}, test loss at step "
                             f"{_step(test)} (checkpoints every {points[1]['step'] - points[0]['step'] if len(points) > 1 else '—'} steps)",
                     "published": "restricted loss falls before test loss (Nanda et al.)",
                     "verdict": "yes" if restricted is not None and test is not None and restricted < test
                     else "partly" if restricted is not None and restricted == test else "no"})
    return rows


def summarize(folder: RunFolder, config: EmergenceConfig) -> dict:
    arms = {}
    for arm in ARMS:
        state = read_state(folder.arm_dir(arm), config.arm(arm))
        if state.records:
            arms[arm] = {"finished": state.finished, "stop_reason": state.stop_reason,
                         "milestones": arm_milestones(state.records), "records": state.records}
    path = folder.path / "results" / "progress_measures.json"
    progress = folder.read(path, "progress measures") if path.exists() else None
    grok_ei = {arm: grok_ei_summary(folder, arm, arms[arm]["records"], config) for arm in EI_ARMS if arm in arms}
    summary = {"settings": config.identity(), "arms": arms, "progress_measures": progress, "grok_ei": grok_ei,
               "model_ei": model_ei_summary(folder, config) if config.model_ei else None}
    summary["verdicts"] = grokking_verdicts(arms, progress)
    return summary


__all__ = ["LOSS_FALLEN", "arm_milestones", "ei_entry", "first_step", "grokking_verdicts", "summarize"]
