"""Learning through negation: the seed essay's TinyLSTM experiments, reproduced in MLX.

- :mod:`.tasks` — sorted / zig-zag / pivot sequences, random and hard ("one-swap")
  negatives, input representations (standard, neighbour difference, anchor difference).
- :mod:`.models` — :class:`~.models.TinyLSTM` (MLX's ``nn.LSTM``, published sizes) and
  :class:`~.models.SeedBatch`, many seeds trained as one vectorised model.
- :mod:`.experiments` — hard vs random negatives, the collapse chain (hard, soft and
  mixed-ground-truth labels), input representations; :func:`~.experiments.run_unit`.
- :mod:`.runner` — the resumable run folder and worker processes; :func:`~.runner.run_lab`.
- :mod:`.report` — our numbers beside the published tables, with verdicts; :mod:`.plots` — PNGs.

Command line: ``symbiont lab negation [--seeds N] [--steps S] [--out DIR] [--only EXPERIMENT]``.
Nothing here imports MLX until a submodule is imported.
"""
