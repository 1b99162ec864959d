"""Subliminal learning (Cloud et al. 2025) end to end, with its variations.

A teacher with a trait (a system prompt, a steering preset, or none for the control)
writes number sequences; the published filter keeps the clean ones; a LoRA student of
the same base model is fine-tuned on them; probes measure whether the trait moved.

- :mod:`.prompts`, :mod:`.teacher`, :mod:`.numbers`, :mod:`.filter`, :mod:`.dataset`,
  :mod:`.noise` — number prompts, the trait teacher, batched generation, the filter,
  chat datasets for ``mlx_lm.lora``, noise variants.
- :mod:`.student`, :mod:`.probes`, :mod:`.stats`, :mod:`.mechanism`, :mod:`.distributed`
  — LoRA students through ``mlx_lm.tuner``, sampled / logit / numbers-prefix probes,
  confidence intervals and tests, residual-direction cosines, data-parallel training.
- :mod:`.config` — the run configuration (TOML); :mod:`.run` — the resumable run folder
  and its stages; :mod:`.report` — ``summary.md`` and ``metrics.json``; :mod:`.plots` — PNGs.

Command line: ``symbiont lab run <config.toml> [--out DIR]``, ``symbiont lab report <run>``.
Example configurations: ``symbiont_lab/subliminal/configs/*.toml``.
Nothing here imports MLX until a submodule that needs it is imported.
"""
