"""Auto-interpretation: the loaded model explains a latent, scored by detection (``messages`` and ``handler``)."""
