"""A resumable emergence run: grokking arms, EI across their checkpoints, EI on a language model.

Folder layout::

    config.json                               settings the results depend on (checked on resume)
    arms/<arm>/state.json                     curve records, step reached, finished or not
    arms/<arm>/checkpoints/step_NNNNNN.safetensors   weights every checkpoint_every steps
    arms/<arm>/resume_NNNNNN.safetensors      weights + AdamW state of the last checkpoint
    results/grok_ei/<arm>/step_NNNNNN.json    each EI scale's outputs at one checkpoint
    results/progress_measures.json            restricted / excluded loss per checkpoint
    results/model_ei/units.json, <scale>.json the language model's units and each scale's outputs
    progress.jsonl                            live curves (:mod:`symbiont_lab.progress`)
    runs.json                                 one entry per invocation
    summary.md, summary.json, plots/          written by :mod:`.report`

Every stage writes its files atomically when it finishes a piece (a checkpoint, a scale), so
a killed run redoes at most one piece; the same command again continues.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlx_hooks.effective_information import bootstrap_ei, one_hot_outputs

from ..progress import ProgressLog
from ..run_folder import append_run, dump_json, prepare_config, read_json, run_entry
from .config import ARMS, EI_ARMS, EmergenceConfig
from .ei_grokking import SCALES as GROK_SCALES
from .ei_grokking import measure_checkpoint
from .ei_model import SCALES as MODEL_SCALES
from .ei_model import choose_units, encode_prompt_sets, measure_scales
from .grokking import EmergenceError, checkpoint_path, load_weights, make_split, read_state, saved_checkpoints, train_arm
from .progress_measures import key_frequencies, restricted_and_excluded
from .prompt_sets import PROMPT_SETS

FORMAT_VERSION = 1
SHIPPED_SAE = "smollm2-135m-instruct/resid_post.15-topk32-4608"
"""The shipped SAE (under ``sae_weights/``) used with the default model."""
WEIGHT = {"train": 75.0, "grok_ei": 10.0, "model_ei": 15.0}
"""Share of the progress bar per stage."""


@dataclass
class RunSummary:
    folder: Path
    computed: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    stopped: bool = False


class RunFolder:
    """The files of one run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def prepare(self, config: EmergenceConfig) -> None:
        prepare_config(self.path / "config.json", {"format": FORMAT_VERSION, "lab": "emergence",
                                                   "settings": config.identity()},
                       expect={"lab": "emergence"}, kind="an emergence run configuration", error=EmergenceError)

    def arm_dir(self, arm: str) -> Path:
        return self.path / "arms" / arm

    def grok_ei_path(self, arm: str, step: int) -> Path:
        return self.path / "results" / "grok_ei" / arm / f"step_{step:06d}.json"

    def model_ei_dir(self) -> Path:
        return self.path / "results" / "model_ei"

    def read(self, path: Path, what: str):
        return read_json(path, what, EmergenceError)

    def grok_ei(self, arm: str) -> dict[int, dict]:
        """EI results of an arm's checkpoints, ``{step: result}``."""
        folder = self.path / "results" / "grok_ei" / arm
        out = {}
        for path in sorted(folder.glob("step_*.json")) if folder.is_dir() else []:
            data = self.read(path, "EI result")
            if not isinstance(data, dict) or set(data.get("scales", {})) != set(GROK_SCALES):
                raise EmergenceError(f"{path}: not an EI result of every scale; delete it to recompute")
            out[int(data["step"])] = data
        return out

    def model_ei(self) -> tuple[dict | None, dict]:
        """(units, ``{scale: result}``) of the language-model measurement so far."""
        folder = self.model_ei_dir()
        units_path = folder / "units.json"
        units = self.read(units_path, "unit choice") if units_path.exists() else None
        done = {}
        for name in MODEL_SCALES:
            path = folder / f"{name}.json"
            if path.exists():
                data = self.read(path, "EI result")
                if not isinstance(data, dict) or "choices" not in data:
                    raise EmergenceError(f"{path}: not an EI result; delete it to recompute")
                done[name] = data
        return units, done

    def runs(self) -> list:
        from ..run_folder import read_runs

        return read_runs(self.path, EmergenceError)


def ei_steps(steps: list[int], every: int) -> list[int]:
    """The checkpoints EI is measured at: every ``every``-th, and always the last."""
    chosen = steps[::every]
    return chosen + [steps[-1]] if steps and steps[-1] not in chosen else chosen


def quick_ei(choices) -> float:
    """Conditional EI (bits) of stored outputs ``[prompts, states]``, without intervals (for live curves)."""
    per_prompt, _ = one_hot_outputs(np.asarray(choices))
    return bootstrap_ei(per_prompt, n_boot=0).value.ei_bits


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 else float("nan")


def run_lab(config: EmergenceConfig, out: str | os.PathLike, *, progress: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None, language_model: Any = None) -> RunSummary:
    """Run (or resume) every stage of ``config`` in ``out``. ``language_model``: ``(model, tokenizer, sae)``
    to use instead of loading ``config.model`` and its SAE. Does not write the report."""
    say = progress or (lambda m: None)
    stop = should_stop or (lambda: False)
    folder = RunFolder(out)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.prepare(config)
    log = ProgressLog(folder.path)
    summary = RunSummary(folder.path)
    started = time.perf_counter()
    arm_share = WEIGHT["train"] / len(ARMS)
    log.emit("start", 0, 100, f"emergence lab: arms {', '.join(ARMS)}, p = {config.p}")
    interrupted = True
    try:
        for k, arm in enumerate(ARMS):
            arm_config = config.arm(arm)
            before = read_state(folder.arm_dir(arm), arm_config)
            if before.finished:
                say(f"{arm}: already trained ({before.step} steps, {before.stop_reason})")
                continue
            say(f"{arm}: training from step {before.step} (p = {arm_config.p}, {arm_config.train_fraction:.0%} of "
                f"pairs, weight decay {arm_config.weight_decay:g})")

            def on_record(r: dict, arm=arm, k=k, budget=arm_config.steps) -> None:
                log.emit(f"train {arm}", k * arm_share + arm_share * r["step"] / budget, 100,
                         f"{arm} step {r['step']}: train {r['train_accuracy']:.3f}, test {r['test_accuracy']:.3f}",
                         step=r["step"], **{f"accuracy: {arm} train": r["train_accuracy"],
                                            f"accuracy: {arm} test": r["test_accuracy"],
                                            f"log10 loss: {arm} train": _log10(r["train_loss"]),
                                            f"log10 loss: {arm} test": _log10(r["test_loss"]),
                                            f"weight norm: {arm}": r["weight_norm"],
                                            f"Fourier sparsity: {arm}": r["fourier_sparsity"]})

            state = train_arm(arm_config, folder.arm_dir(arm), on_record, stop)
            summary.computed.append(f"train {arm}")
            if not state.finished:
                summary.stopped = True
                return summary
            say(f"{arm}: done at step {state.step} ({state.stop_reason})")
        _grok_ei(config, folder, log, say, stop, summary)
        if summary.stopped:
            return summary
        _progress_measures(config, folder, say)
        if config.model_ei is not None:
            _model_ei(config, folder, log, say, stop, summary, language_model)
            if summary.stopped:
                return summary
        interrupted = False
        log.emit("done", 100, 100, "all stages finished")
    finally:
        summary.wall_s = time.perf_counter() - started
        if summary.computed or summary.stopped:
            append_run(folder.path, run_entry(summary.wall_s, interrupted, summary.computed), EmergenceError,
                       strict=False)
    return summary


def _grok_ei(config, folder: RunFolder, log, say, stop, summary: RunSummary) -> None:
    for k, arm in enumerate(EI_ARMS):
        arm_config = config.arm(arm)
        arm_dir = folder.arm_dir(arm)
        steps = ei_steps(saved_checkpoints(arm_dir), config.ei_every)
        split = make_split(arm_config.p, arm_config.train_fraction, arm_config.seed)
        final = load_weights(arm_config, checkpoint_path(arm_dir, read_state(arm_dir, arm_config).step))
        freqs = key_frequencies(final, split.tokens, config.top_frequencies)
        todo = [s for s in steps if not folder.grok_ei_path(arm, s).exists()
                or folder.read(folder.grok_ei_path(arm, s), "EI result").get("key_frequencies") != freqs]
        if todo:
            say(f"{arm}: EI at {len(todo)} checkpoint(s) (key frequencies {freqs})")
        for j, step in enumerate(steps):
            path = folder.grok_ei_path(arm, step)
            if path.exists() and folder.read(path, "EI result").get("key_frequencies") == freqs:
                continue  # (measured with other key frequencies: the arm has since trained on)
            if stop():
                summary.stopped = True
                return
            result = measure_checkpoint(load_weights(arm_config, checkpoint_path(arm_dir, step)), split, freqs,
                                        config.grok_ei)
            dump_json(path, {"arm": arm, "step": step, "key_frequencies": freqs, "scales": result})
            summary.computed.append(f"EI {arm} step {step}")
            bits = {f"EI bits: {arm} {name}": quick_ei(r["choices"]) for name, r in result.items()}
            done = WEIGHT["train"] + WEIGHT["grok_ei"] * (k + (j + 1) / len(steps)) / len(EI_ARMS)
            log.emit(f"EI {arm}", done, 100, f"{arm} step {step}: " + ", ".join(
                f"{n.split()[-1]} {v:.2f}" for n, v in bits.items()), step=step, **bits)


def _progress_measures(config, folder: RunFolder, say) -> None:
    """Restricted / excluded loss at every checkpoint of every arm (cheap: recomputed in one go)."""
    path = folder.path / "results" / "progress_measures.json"
    finals = {arm: saved_checkpoints(folder.arm_dir(arm))[-1] for arm in ARMS}
    if path.exists() and all(folder.read(path, "progress measures").get(arm, {}).get("final_step") == finals[arm]
                             for arm in ARMS):
        return
    out = {}
    for arm in ARMS:
        arm_config = config.arm(arm)
        arm_dir = folder.arm_dir(arm)
        split = make_split(arm_config.p, arm_config.train_fraction, arm_config.seed)
        steps = saved_checkpoints(arm_dir)
        final = load_weights(arm_config, checkpoint_path(arm_dir, steps[-1]))
        freqs = key_frequencies(final, split.tokens, config.top_frequencies)
        rows = []
        for step in steps:
            model = load_weights(arm_config, checkpoint_path(arm_dir, step))
            rows.append({"step": step, **restricted_and_excluded(model, split.tokens, split.labels, split.train,
                                                                 split.test, freqs)})
        out[arm] = {"key_frequencies": freqs, "checkpoints": rows, "final_step": steps[-1]}
    dump_json(path, out)
    say("restricted and excluded loss computed")


def _model_ei(config, folder: RunFolder, log, say, stop, summary: RunSummary, language_model) -> None:
    units, done = folder.model_ei()
    if units is not None and set(done) == set(MODEL_SCALES):
        return
    if language_model is None:
        language_model = load_language_model(config, say)
    model, tokenizer, sae = language_model
    prompts, _ = encode_prompt_sets(tokenizer, PROMPT_SETS)
    out_dir = folder.model_ei_dir()
    if units is None:
        say("language model: choosing units (activations, SAE latents, steering vectors)")
        units = choose_units(model, tokenizer, sae, prompts, config.model_ei)
        dump_json(out_dir / "units.json", units)

    def save(name: str, result: dict) -> None:
        dump_json(out_dir / f"{name}.json", result)
        summary.computed.append(f"model EI {name}")

    def on_scale(name: str, k: int) -> None:
        bits = quick_ei(done[name]["choices"])
        log.emit("EI language model", WEIGHT["train"] + WEIGHT["grok_ei"] + WEIGHT["model_ei"] * k / len(MODEL_SCALES),
                 100, f"{name}: {bits:.2f} bits over {len(prompts)} prompts")
        say(f"language model: {name} {bits:.2f} bits")

    measure_scales(model, sae, prompts, units, done, save, stop, on_scale)
    if set(done) != set(MODEL_SCALES):
        summary.stopped = True


def load_language_model(config: EmergenceConfig, say) -> tuple:
    """(model, tokenizer, SAE) for ``config.model`` and ``config.sae`` (the shipped SAE for the default model)."""
    from mlx_hooks.loader import load_model
    from mlx_hooks.sae.formats import load_sae
    from mlx_hooks.sae.registry import SHIPPED_DIR

    sae_path = config.sae or (str(SHIPPED_DIR / SHIPPED_SAE) if config.model == "default" else None)
    if sae_path is None:
        raise EmergenceError(f"--sae: give an SAE folder for {config.model} (the shipped SAE fits only the default model)")
    say(f"loading {config.model} and the SAE {sae_path}")
    loaded = load_model(config.model)
    sae = load_sae(sae_path, loaded)
    point = f"resid_post.{config.model_ei.layer}"
    if sae.cfg.hook_point != point:
        raise EmergenceError(f"{sae_path}: the SAE reads {sae.cfg.hook_point}, but the EI layer is {point}; "
                             f"use --layer {sae.cfg.hook_point.split('.')[-1]}")
    return loaded.model, loaded.tokenizer, sae


__all__ = ["RunFolder", "RunSummary", "ei_steps", "load_language_model", "quick_ei", "run_lab"]
