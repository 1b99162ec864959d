"""The students B of one teacher A, and the mechanism view.

- ``supervised``: a LoRA on (A's reply → the right answer) over the train split; tested on A's
  replies to the held-out prompts. The student sees A's reply only, inside :data:`RECONSTRUCT`.
- ``zero-shot``: the base model given A's held-out replies in :data:`RECONSTRUCT`, no training.
- ``blind``: a LoRA on A's train replies alone (an empty user turn, A's reply as the answer: no
  prompt, no right answer); then its update is negated (every LoRA scale × −1, task-vector
  negation) and the negated B answers the original held-out prompts. Separately the base is
  steered with −(B − base): B's mean residual shift on the fit prompts at one layer, the layer
  chosen by accuracy on the fit split among ``steer_layers``.
- mechanism: cosine per layer of A's residual shift (A − base) and the blind B's (B − base) at the
  last prompt token of the test prompts; the share of prompts whose logit-lens top-1 token under A
  differs from the base's, per layer (where A's answer departs).
"""

from __future__ import annotations

import numpy as np

from ..subliminal.mechanism import direction_cosines, residual_means
from .models import lora_scaled
from .stages import adapter_model, ask, cached, items, seed_stages, train_adapter
from .tasks import correct

RECONSTRUCT = "Here is an answer: {answer}\nWhat was the intended answer? Reply with the answer only."
"""What a reconstructing student is shown (never the prompt; never told the answer is inverted)."""


def _hits(test, texts) -> list[float]:
    return [float(correct(i, t)) for i, t in zip(test, texts)]


def steer_layers(config, n_layers: int) -> list[int]:
    chosen = config.students.steer_layers or tuple(int(round(x)) for x in np.linspace(0.2, 0.8, 4) * (n_layers - 1))
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        from .config import ConfigError

        raise ConfigError(f"[students] steer_layers: {bad} outside the model's layers 0..{n_layers - 1}")
    return sorted(set(chosen))


def lens_top1(loaded, prompts) -> np.ndarray:
    """Logit-lens top-1 token at the last prompt position, per prompt and layer: ``[N, layers]``."""
    import mlx.core as mx

    from mlx_hooks.hooks import hooked
    from mlx_hooks.lens import lens_logprobs

    from ..subliminal.probes import prompt_tokens

    model = loaded.model
    points = [f"resid_post.{i}" for i in range(len(model.layers))]
    out = []
    with hooked(model, capture=points) as session:
        for prompt in prompts:
            session.recorder.clear()
            model(mx.array(prompt_tokens(loaded.tokenizer, prompt))[None])
            last = mx.stack([session.recorder.stack(p)[0][-1] for p in points])  # [layers, D]
            out.append(np.array(mx.argmax(lens_logprobs(model, last), axis=-1)))
        session.recorder.clear()
    return np.stack(out)


def run_students(run, seed: int, kind: str) -> None:
    from mlx_hooks.interventions import AddVector

    config = run.config
    stages = seed_stages(run, seed)
    train, fit, test = items(run, "train"), items(run, "fit"), items(run, "test")
    a = stages.get(f"replies_{kind}")
    shown = {split: [RECONSTRUCT.format(answer=t.strip()) for t in a[split]] for split in ("train", "test")}
    regimes = config.students.regimes

    if "supervised" in regimes:
        name = f"supervised-{kind}"
        train_adapter(run, stages, name, [(s, i.right) for s, i in zip(shown["train"], train)], seed)
        run.done_units -= 1  # training and testing are one unit

        def supervised():
            texts = ask(run, adapter_model(run, stages, name), shown["test"])
            return {"replies": texts, "hits": _hits(test, texts)}

        cached(run, stages, f"supervised_{kind}", supervised)

    if "zero-shot" in regimes:
        def zero_shot():
            texts = ask(run, run.base(), shown["test"])
            return {"replies": texts, "hits": _hits(test, texts)}

        cached(run, stages, f"zeroshot_{kind}", zero_shot)

    if "blind" in regimes:
        name = f"blind-{kind}"
        train_adapter(run, stages, name, [("", t.strip()) for t in a["train"]], seed)
        run.done_units -= 1

        def blind():
            loaded = adapter_model(run, stages, name)
            prompts = [i.prompt for i in test]
            as_trained = ask(run, loaded, prompts)
            with lora_scaled(loaded.model, -1.0):
                negated = ask(run, loaded, prompts)
            return {"replies_negated": negated, "hits_negated": _hits(test, negated),
                    "replies_trained": as_trained, "hits_trained": _hits(test, as_trained)}

        cached(run, stages, f"blind_{kind}", blind)

        def steer():
            loaded = adapter_model(run, stages, name)
            fit_prompts = [i.prompt for i in fit]
            shift = residual_means(loaded, fit_prompts)  # [layers, D]
            with lora_scaled(loaded.model, 0.0):
                shift = shift - residual_means(loaded, fit_prompts)
                fit_acc = {}
                for layer in steer_layers(config, len(loaded.model.layers)):
                    vector = AddVector(mx_array(-config.students.steer_scale * shift[layer]))
                    texts = ask(run, loaded, fit_prompts, interventions={f"resid_post.{layer}": [vector]})
                    fit_acc[layer] = float(np.mean(_hits(fit, texts)))
                best = max(fit_acc, key=lambda k: fit_acc[k])
                vector = AddVector(mx_array(-config.students.steer_scale * shift[best]))
                texts = ask(run, loaded, [i.prompt for i in test], interventions={f"resid_post.{best}": [vector]})
            return {"fit_accuracy": {str(k): v for k, v in fit_acc.items()}, "layer": best,
                    "shift_norm": float(np.linalg.norm(shift[best])), "replies": texts, "hits": _hits(test, texts)}

        cached(run, stages, f"steer_{kind}", steer)

    if config.analysis.mechanism:
        def mechanism():
            prompts = [i.prompt for i in test]
            base_means = residual_means(run.base(), prompts)
            teacher = adapter_model(run, stages, f"teacher-{kind}")
            a_shift = residual_means(teacher, prompts) - base_means
            departed = (lens_top1(teacher, prompts) != lens_top1(run.base(), prompts)).mean(axis=0)
            out = {"a_shift_norm": np.linalg.norm(a_shift, axis=1).tolist(), "lens_departed": departed.tolist()}
            if "blind" in regimes:
                b_shift = residual_means(adapter_model(run, stages, f"blind-{kind}"), prompts) - base_means
                out["cosine"] = [None if np.isnan(c) else float(c) for c in direction_cosines(a_shift, b_shift)]
                out["b_shift_norm"] = np.linalg.norm(b_shift, axis=1).tolist()
            return out

        cached(run, stages, f"mechanism_{kind}", mechanism)


def mx_array(values):
    import mlx.core as mx

    return mx.array(np.asarray(values, dtype=np.float32))
