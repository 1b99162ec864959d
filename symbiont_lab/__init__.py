"""Symbiont's lab: small, reproducible experiments, headless (no Qt outside plot rendering).

- :mod:`symbiont_lab.negation` — the "learning through negation" experiments (hard
  negatives, the collapse chain, input representations) on a TinyLSTM in MLX.
"""
