"""The emergence lab: grokking on modular addition, and effective information of micro vs macro units.

- :mod:`.model` — the one-layer grokking transformer (Nanda et al. 2023), with editable sites.
- :mod:`.grokking` — resumable full-batch AdamW training of one arm, curves and checkpoints.
- :mod:`.progress_measures` — weight norm, Fourier sparsity, key frequencies, restricted/excluded loss.
- :mod:`.ei_grokking` — EI of neurons, residual dimensions, Fourier features, random directions at a checkpoint.
- :mod:`.ei_model` — EI on a language model: neurons, residual dimensions, SAE latents, steering, controls.
- :mod:`.prompt_sets` — the built-in prompt sets for the language model.
- :mod:`.config` — :class:`~.config.EmergenceConfig` (the three arms and both measurements).
- :mod:`.runner` — the resumable run folder; :func:`~.runner.run_lab`.
- :mod:`.analysis` — numbers and verdicts; :mod:`.report` — summary.md/summary.json; :mod:`.plots` — PNGs.

The effective-information measurement itself is in the engine: :mod:`mlx_hooks.effective_information`
and :mod:`mlx_hooks.intervention_states`. Command line: ``symbiont lab emergence``.
Nothing here imports MLX until a submodule is imported.
"""
