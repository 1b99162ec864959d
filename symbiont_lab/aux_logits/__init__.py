"""The auxiliary-logit ("MNIST") subliminal-learning experiment, reproduced in MLX.

- :mod:`.data` — scikit-learn's 8×8 digits or MNIST IDX files, pixels in [−1, 1].
- :mod:`.model` — the MLP, many (role, seed) copies stacked as one model.
- :mod:`.train` — teacher on class logits; students on the teacher's logits of noise (KL).
- :mod:`.experiments` — :class:`~.experiments.AuxConfig` and :func:`~.experiments.run_unit`
  (teacher, same-init, different-init and all-logits students for one m and a chunk of seeds).
- :mod:`.runner` — the resumable run folder; :func:`~.runner.run_lab`.
- :mod:`.report` — our numbers beside the published ones, with verdicts; :mod:`.plots` — PNGs.

Command line: ``symbiont lab aux-logits [--seeds N] [--mnist DIR] [--out DIR] [--aux 1,2,3,5,10,50]``.
Nothing here imports MLX until a submodule is imported.
"""
