"""Loading a model and estimating its memory (``messages`` and ``handler``)."""
