"""Symbiont's lab: small, reproducible experiments, headless (no Qt outside plot rendering).

- :mod:`symbiont_lab.negation` — the "learning through negation" experiments (hard
  negatives, the collapse chain, input representations) on a TinyLSTM in MLX.
- :mod:`symbiont_lab.aux_logits` — subliminal transfer through an MLP's auxiliary logits
  (teacher on digits, students on the teacher's auxiliary logits of noise).
- :mod:`symbiont_lab.progress` — ``progress.jsonl`` in a run folder, written by every lab and
  tailed by the app's lab panel.
"""
